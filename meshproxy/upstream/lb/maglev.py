"""Dispatcher for the Maglev picker: exports the compiled ``Maglev`` or its twin.

Owns only the choice; the behaviour lives in ``_maglev_py.py`` (the reference) and
``_maglev_c.pyx``, selected by :func:`meshproxy._ext.load_twin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy._ext import load_twin

__all__ = ("Maglev",)

if TYPE_CHECKING:
    from meshproxy.upstream.lb._maglev_py import Maglev
else:
    Maglev = load_twin(__name__.rpartition(".")[0] + "._maglev").Maglev
