"""The one error the HTTP/1.1 message parsers raise: a message this hop refuses, and its answer.

Owns ``MessageRefused``: the status a downstream answers with (400, 431, 501) and the body that
says why. Both request-parser twins (``_h1_py`` and ``_h1_c``) raise it, and the downstream
connection raises it from its own checks on a parsed head, so one handler answers all of them.
Must not import anything else of meshproxy (the compiled parser imports it).
"""

from __future__ import annotations


class MessageRefused(Exception):
    """The byte stream is not an HTTP/1.1 request this hop accepts: answer ``status``, close."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(body.decode("latin-1"))
        self.status = status
        self.body = body
