"""Dispatcher for the weighted random picker: exports the compiled ``RandomLb`` or its twin.

Owns only the choice; the behaviour lives in ``_random_lb_py.py`` (the reference) and
``_random_lb_c.pyx``, selected by :func:`meshproxy._ext.load_twin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy._ext import load_twin

__all__ = ("RandomLb",)

if TYPE_CHECKING:
    from meshproxy.upstream.lb._random_lb_py import RandomLb
else:
    RandomLb = load_twin(__name__.rpartition(".")[0] + "._random_lb").RandomLb
