"""Dispatcher for the least-request picker: exports the compiled ``LeastRequest`` or its twin.

Owns only the choice; the behaviour lives in ``_least_request_py.py`` (the reference) and
``_least_request_c.pyx``, selected by :func:`meshproxy._ext.load_twin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy._ext import load_twin

__all__ = ("LeastRequest",)

if TYPE_CHECKING:
    from meshproxy.upstream.lb._least_request_py import LeastRequest
else:
    LeastRequest = load_twin(__name__.rpartition(".")[0] + "._least_request").LeastRequest
