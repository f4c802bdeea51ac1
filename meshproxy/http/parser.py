"""Dispatcher for the HTTP/1.1 parsers: exports the compiled request and response parsers or twins.

Owns only the choice; the behaviour lives in the twin (``_h1_py.py`` for requests,
``_h1_response_py.py`` for responses, ``_h1_framing_py.py`` for what both share; the rules are
in their docstrings) and ``_h1_c.pyx`` (the same rules in C, one pass over a head's bytes),
selected by :func:`meshproxy._ext.load_twin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy._ext import load_twin

__all__ = ("RequestHead", "RequestParser", "ResponseHead", "ResponseParser")

if TYPE_CHECKING:
    from meshproxy.http._h1_py import RequestHead, RequestParser, ResponseHead, ResponseParser
else:
    _module = load_twin(__name__.rpartition(".")[0] + "._h1")
    RequestHead, RequestParser = _module.RequestHead, _module.RequestParser
    ResponseHead, ResponseParser = _module.ResponseHead, _module.ResponseParser
