"""Dispatcher for the HTTP/1.1 request parser: exports the compiled ``RequestParser`` or its twin.

Owns only the choice; the behaviour lives in ``_h1_py.py`` (the reference, its rules in its
docstring) and ``_h1_c.pyx`` (the same rules in C, one pass over the head's bytes), selected by
:func:`meshproxy._ext.load_twin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy._ext import load_twin

__all__ = ("RequestHead", "RequestParser")

if TYPE_CHECKING:
    from meshproxy.http._h1_py import RequestHead, RequestParser
else:
    _module = load_twin(__name__.rpartition(".")[0] + "._h1")
    RequestHead, RequestParser = _module.RequestHead, _module.RequestParser
