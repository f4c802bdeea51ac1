"""The HTTP/1.1 response parser (RFC 9112), pure-Python twin half of ``_h1_c.pyx``.

Owns the framing of one upstream response at a time (``reset`` arms it for the next request):
its head parsed in one pass and handed over as one ``ResponseHead`` whose ``lines`` are the
upstream's own field lines, as received, less the ones this hop removes (hop-by-hop fields,
Transfer-Encoding, the fields a Connection header names); its body counted, de-chunked or read
to the connection's close. An upstream is not trusted (issue 12, findings 1, 11, 15); each rule
below refuses the response with ``MessageRefused(502, reason)`` (the reason is the 502's body):
1. status-line = HTTP-version SP 3DIGIT [SP reason-phrase], version HTTP/1.0 or 1.1, status
   100-599, the reason HTAB, SP, VCHAR or obs-text (§4); fields as ``_h1_framing_py`` says.
2. A head, interim heads before it included, and a trailer section are each bounded by
   ``limit`` bytes and ``max_fields`` fields.
3. Transfer-Encoding is ``chunked`` alone, on one line, and not in HTTP/1.0 nor with a
   Content-Length (§6.1); Content-Length is one line of 1 to 18 digits.
4. An interim response (1xx but 101) has no framing fields and is dropped here: the protocol
   sees the final one. 101 hands the bytes after its head back (the protocol refuses a 101 to a
   request that did not ask to upgrade, by raising from ``on_head``).
5. No body after a response to HEAD, nor after 204 or 304 (§6.3 rule 1); a response without
   Content-Length or chunked is read to the close (rule 7), and its ``keep_alive`` is False.
6. A byte after the complete response is refused (the protocol decides what the response that
   completed is worth: rule 4 of ``upstream.py``).
Must not import asyncio; imports only ``errors`` and ``_h1_framing_py``.
"""

from __future__ import annotations

from typing import Protocol

from meshproxy.http._h1_framing_py import (
    AFTER,
    BODY,
    CHUNK_SIZE,
    COMPLETE,
    EOF_BODY,
    FRAMING_TOO_LARGE,
    HEAD,
    TOO_LARGE,
    TOO_MANY,
    TUNNEL,
    VALUE_CHARS,
    Framer,
    content_length,
)
from meshproxy.http.errors import MessageRefused

# Fields this hop never relays in a response: hop-by-hop (RFC 9110 §7.6.1) and the framing it
# recomputes (Content-Length is relayed: the stream keeps a length it was given).
_DROPPED = frozenset({b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"})
# Connection tokens that name no field to remove (RFC 9110 §7.6.1 lets a proxy ignore a token
# naming framing, which this hop recomputes anyway).
_NOT_NAMED = frozenset({b"", b"close", b"keep-alive", b"content-length", b"transfer-encoding"})
_NO_BODY = frozenset({204, 304})


def refused(reason: str) -> MessageRefused:
    return MessageRefused(502, reason.encode())


class ResponseHead:
    """A final response's head (or a 101's) as the parser hands it over."""

    __slots__ = ("chunked", "content_length", "http10", "keep_alive", "lines", "status")

    def __init__(self) -> None:
        self.status = 0
        self.http10 = False
        self.keep_alive = True
        self.lines = b""  # the relayed field lines, each ending in CRLF
        self.content_length = -1  # -1: none
        self.chunked = False


class ResponseProtocol(Protocol):
    def on_head(self, head: ResponseHead) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...


class ResponseParser(Framer):
    """Frames the response to each request on one upstream connection (the rules above)."""

    def __init__(self, protocol: ResponseProtocol, limit: int, max_fields: int) -> None:
        super().__init__(protocol, limit, max_fields, AFTER)
        self.responses = protocol
        self.head_request = False
        self.head_bytes = 0  # bytes of this response's heads so far, interim ones included

    def reset(self, head_request: bool) -> None:
        """The next response answers a new request (``head_request``: its method is HEAD)."""
        self.state = HEAD
        self.buf = None
        self.scanned = self.line_start = 0
        self.head_request = head_request
        self.head_bytes = 0

    def feed(self, data: bytes) -> bytes | None:
        try:
            return super().feed(data)
        except MessageRefused as exc:
            raise _for_response(exc, self.limit, self.max_fields) from None

    def _on_block(self, block: bytes) -> int:
        self.head_bytes += len(block) + 4
        if self.head_bytes > self.limit:
            raise MessageRefused(431, TOO_LARGE)  # interim heads add up (rule 2)
        head = self._head(block)
        status = head.status
        if status < 200 and status != 101:
            if head.content_length >= 0 or head.chunked:
                raise refused(f"interim {status} response with Content-Length or Transfer-Encoding")
            return HEAD  # rule 4: the final response follows
        no_body = self.head_request or status in _NO_BODY
        if not no_body and not head.chunked and head.content_length < 0 and status != 101:
            head.keep_alive = False  # rule 5: read to the close
        self.head_bytes = 0  # the count covers the trailer section now
        self.responses.on_head(head)
        if status == 101:
            return TUNNEL
        if no_body:
            return COMPLETE
        if head.chunked:
            return CHUNK_SIZE
        if head.content_length > 0:
            self.remaining = head.content_length
            return BODY
        return COMPLETE if head.content_length == 0 else EOF_BODY

    def _head(self, block: bytes) -> ResponseHead:
        head = ResponseHead()
        first, crlf, rest = block.partition(b"\r\n")
        if b"\r" in first:
            raise refused("bare CR")
        version, sp, tail = first.partition(b" ")
        if version == b"HTTP/1.1":
            head.http10 = False
        elif version == b"HTTP/1.0":
            head.http10 = True
        elif (
            len(version) == 8
            and version.startswith(b"HTTP/")
            and version[5:6].isdigit()
            and version[6:7] == b"."
            and version[7:8].isdigit()
        ):
            raise refused(f"{version.decode()} is not an HTTP/1.x response")
        else:
            raise refused("malformed status line")
        code, reason = tail[:3], tail[3:]
        if not sp or len(code) != 3 or not code.isdigit() or (reason and reason[0] != 0x20):
            raise refused("malformed status line")
        if reason[1:].translate(None, VALUE_CHARS):
            raise refused("a control byte in the status line's reason phrase")
        status = head.status = int(code)
        if not 100 <= status <= 599:
            raise refused(f"status {status} is outside 100-599")
        self._fields(rest if crlf else b"", head)
        return head

    def _fields(self, block: bytes, head: ResponseHead) -> None:
        kept: list[tuple[bytes, bytes]] = []  # (lower-case name, line as received)
        lengths: list[bytes] = []
        close = keep = False
        named: list[bytes] = []
        for count, line in enumerate(block.split(b"\r\n") if block else [], 1):
            name, value = self.field(line, count)
            name = name.lower()
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                if head.chunked or value.lower() != b"chunked":
                    raise refused("a transfer coding other than chunked, or chunked twice")
                head.chunked = True
                continue
            elif name == b"connection":
                for token in value.split(b","):
                    token = token.strip(b" \t").lower()
                    if token == b"close":
                        close = True
                    elif token == b"keep-alive":
                        keep = True
                    elif token not in _NOT_NAMED:
                        named.append(token)
                continue
            elif name in _DROPPED:
                continue
            kept.append((name, line))
        if head.chunked:
            if head.http10:
                raise refused("Transfer-Encoding in an HTTP/1.0 response")
            if lengths:
                raise refused("Content-Length with Transfer-Encoding")
        elif lengths:
            head.content_length = content_length(lengths)
        head.lines = b"".join(line + b"\r\n" for name, line in kept if name not in named)
        head.keep_alive = not close and (keep or not head.http10)


def _for_response(exc: MessageRefused, limit: int, max_fields: int) -> MessageRefused:
    """A refusal in the shared grammar (400 or 431, for a client) as this direction's 502."""
    if exc.status == 502:
        return exc
    if exc.body in (TOO_LARGE, FRAMING_TOO_LARGE):
        return refused(f"response head or trailers over {limit} bytes")
    if exc.body == TOO_MANY:
        return refused(f"more than {max_fields} response header or trailer fields")
    return MessageRefused(502, exc.body.removeprefix(b"bad request: "))
