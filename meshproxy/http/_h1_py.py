"""The HTTP/1.1 request parser (RFC 9112), pure-Python twin of ``_h1_c.pyx``: bytes in, heads out.

The twin is three modules: this one (requests), ``_h1_response_py`` (responses, re-exported
here so that ``_h1_py`` offers what ``_h1_c`` offers) and ``_h1_framing_py`` (what both
directions share: line scanning, the field grammar, body framing).

Owns the framing of a downstream byte stream into requests: each head (request-line and fields)
is parsed in one pass once its empty line arrived, validated, classified and handed over as one
``RequestHead``; the body is then counted (Content-Length) or decoded (chunked, its trailers
validated and dropped). Sans-I/O and callback-driven, as httptools was: ``feed(data)`` calls
``protocol.on_message_begin()`` at a head's first byte, ``protocol.on_head(head)`` (True when
the bytes after this head are a tunnel's), ``protocol.on_body(data)`` and
``protocol.on_message_complete()``, and returns the tunnel's first bytes, if any. Three Python
calls per request without a body, none per field.

The rules, each stricter than or equal to the fuzzers' RFC 9112 model (tests/fuzz/rfc9112.py),
each refusal a ``MessageRefused``:
1. Lines end in CRLF: a bare LF or bare CR is refused (400). CR and LF bytes before a
   request-line are skipped (RFC 9112 §2.2).
2. request-line = token SP request-target SP HTTP-version, single spaces (§3; this closes the
   fuzzers' pipelined double-space finding: every request-line is checked, not a read's first),
   the target visible ASCII without a fragment, the version HTTP/1.0 or HTTP/1.1.
3. field-line = token ":" OWS value OWS: no obs-fold, no whitespace before the colon, no CTL
   but HTAB in a value (§5, RFC 9110 §5.5). At most ``max_fields`` fields and ``limit`` bytes
   from the request-line to the empty line (431); the bytes of an incomplete head are bounded
   by the same ``limit``, and by the same rules a chunk-size line and a trailer section.
4. Framing (§6): Transfer-Encoding lines together name ``chunked`` once and last, else 501
   (chunked last) or 400; not in HTTP/1.0; not with Content-Length. Content-Length: one line
   of 1 to 18 digits (a next hop may hold it signed). Chunks: 1 to 16 hex digits, extensions
   ``;name[=token|quoted-string]``, CRLF after the data.
5. Fields the proxy handles itself are taken out of the header list (``SPECIAL``): Host (one,
   RFC 3986 authority, lower-cased), hop-by-hop fields, Transfer-Encoding, Upgrade, Expect
   (only ``100-continue``), x-request-id, x-forwarded-for (lines joined), x-forwarded-proto,
   and the fields a Connection header names (never framing: codec.NEVER_HOP_BY_HOP).
   Content-Length stays in the list (the upstream request carries it).
6. ``drop_underscores``: names with ``_`` are left out (DROP_HEADER); every such name is counted
   in ``RequestHead.underscores`` either way, for REJECT_REQUEST and the stats.

Must not import asyncio; imports only ``codec`` (authority syntax), ``errors`` and its halves.
"""

from __future__ import annotations

from typing import Protocol

from meshproxy.http._h1_framing_py import (
    BODY,
    CHUNK_SIZE,
    COMPLETE,
    HEAD,
    TOKEN_CHARS,
    TUNNEL,
    Framer,
    bad,
    codings,
    content_length,
)
from meshproxy.http._h1_response_py import ResponseHead, ResponseParser
from meshproxy.http.codec import NEVER_HOP_BY_HOP, authority_ok
from meshproxy.http.errors import MessageRefused

__all__ = ("RequestHead", "RequestParser", "ResponseHead", "ResponseParser")

TARGET_CHARS = bytes(range(0x21, 0x7F))  # VCHAR; '#' refused on its own (a fragment)

# Field kinds (rule 5); names absent here are relayed as they are.
HOST, CONNECTION, HOP, TE, UPGRADE, EXPECT, XRID, XFF, XFP, CL = range(10)
SPECIAL: dict[bytes, int] = {
    b"host": HOST,
    b"connection": CONNECTION,
    b"keep-alive": HOP,
    b"proxy-connection": HOP,
    b"te": HOP,
    b"trailer": HOP,
    b"transfer-encoding": TE,
    b"upgrade": UPGRADE,
    b"expect": EXPECT,
    b"x-request-id": XRID,
    b"x-forwarded-for": XFF,
    b"x-forwarded-proto": XFP,
    b"content-length": CL,
    # Envoy's SANITIZE(_SET): a client's own XFCC is never trusted; ours is added under mTLS.
    b"x-forwarded-client-cert": HOP,
    # Only meaningful to an h2c upgrade, which this hop never performs.
    b"http2-settings": HOP,
}


class RequestHead:
    """One request's head as the parser hands it over (rule 5 says which fields are where)."""

    __slots__ = (
        "authority",
        "chunked",
        "content_length",
        "expect",
        "headers",
        "http10",
        "keep_alive",
        "method",
        "request_id",
        "target",
        "underscores",
        "upgrade",
        "upgrading",
        "xff",
        "xfp",
    )

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.http10 = False
        self.keep_alive = True
        self.headers: list[tuple[bytes, bytes]] = []
        self.authority: bytes | None = None
        self.request_id: bytes | None = None
        self.xff: bytes | None = None
        self.xfp: bytes | None = None
        self.upgrade: bytes | None = None  # the Upgrade field's value
        self.upgrading = False  # CONNECT, or Upgrade with a Connection "upgrade" token
        self.expect = False  # Expect: 100-continue
        self.chunked = False
        self.content_length = -1  # -1: no Content-Length
        self.underscores = 0  # field names with an underscore (rule 6)

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length > 0


class RequestProtocol(Protocol):
    def on_message_begin(self) -> None: ...
    def on_head(self, head: RequestHead) -> bool: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...


class RequestParser(Framer):
    """Frames requests out of one connection's bytes (the module docstring's rules)."""

    def __init__(
        self, protocol: RequestProtocol, limit: int, max_fields: int, drop_underscores: bool
    ) -> None:
        super().__init__(protocol, limit, max_fields, HEAD)
        self.requests = protocol
        self.drop_underscores = drop_underscores

    def _begin(self) -> None:
        self.requests.on_message_begin()

    def _on_block(self, block: bytes) -> int:
        head = self._head(block)
        if self.requests.on_head(head):
            self.requests.on_message_complete()
            return TUNNEL
        if head.chunked:
            return CHUNK_SIZE
        if head.content_length > 0:
            self.remaining = head.content_length
            return BODY
        return COMPLETE

    def _head(self, block: bytes) -> RequestHead:
        """Parse a request head, without its final CRLF CRLF (rules 2 to 6)."""
        head = RequestHead()
        first, _, rest = block.partition(b"\r\n")
        if b"\r" in first:
            raise bad("bare CR")
        parts = first.split(b" ")
        if len(parts) != 3 or not parts[0] or parts[0].translate(None, TOKEN_CHARS):
            raise bad("malformed request line")
        method, target, version = parts
        if version == b"HTTP/1.1":
            http10 = False
        elif version == b"HTTP/1.0":
            http10 = True
        else:
            raise bad("unsupported HTTP version")
        if b"#" in target:
            raise bad("request target with a fragment")
        if not target or target.translate(None, TARGET_CHARS):
            raise bad("malformed request target")
        head.method, head.target, head.http10 = method, target, http10
        self._fields(rest, head)
        return head

    def _fields(self, block: bytes, head: RequestHead) -> None:
        """Field lines (CRLF-separated, no final CRLF): validated, counted, classified."""
        lines = block.split(b"\r\n") if block else []
        headers = head.headers
        te_lines: list[bytes] = []
        lengths: list[bytes] = []
        close = keep = upgrade_token = False
        named: list[bytes] = []
        drop = self.drop_underscores
        for count, line in enumerate(lines, 1):
            name, value = self.field(line, count)
            if b"_" in name:
                head.underscores += 1
                if drop:
                    continue
            name = name.lower()
            kind = SPECIAL.get(name)
            if kind is None:
                headers.append((name, value))
            elif kind == HOST:
                if head.authority is not None:
                    raise bad("duplicate Host header")
                if not authority_ok(value):
                    raise bad("invalid Host header")
                head.authority = value.lower()
            elif kind == XRID:
                head.request_id = value
            elif kind == XFF:
                head.xff = value if head.xff is None else head.xff + b", " + value
            elif kind == XFP:
                head.xfp = value
            elif kind == CL:
                lengths.append(value)
                headers.append((name, value))
            elif kind == TE:
                te_lines.append(value)
            elif kind == UPGRADE:
                head.upgrade = value
            elif kind == EXPECT:
                if value.lower() != b"100-continue":
                    raise bad("unsupported Expect value")
                head.expect = True
            elif kind == CONNECTION:
                for token in value.split(b","):
                    token = token.strip(b" \t").lower()
                    if token == b"close":
                        close = True
                    elif token == b"keep-alive":
                        keep = True
                    elif token == b"upgrade":
                        upgrade_token = True
                    elif token and token not in NEVER_HOP_BY_HOP:
                        named.append(token)
            # HOP: dropped
        if te_lines:
            if head.http10:
                raise bad("Transfer-Encoding in an HTTP/1.0 request")
            if lengths:
                raise bad("Content-Length with Transfer-Encoding")
            listed = codings(te_lines)
            if listed != [b"chunked"]:
                if listed[-1:] == [b"chunked"]:  # RFC 9112 §6.1: 501 for a coding we cannot apply
                    raise MessageRefused(501, b"transfer codings other than chunked are not supported")
                raise bad("chunked must be the final transfer coding")
            head.chunked = True
        elif lengths:
            head.content_length = content_length(lengths)
        if named:  # RFC 9110 §7.6.1: the fields Connection names are hop-by-hop too
            head.headers = [h for h in headers if h[0] not in named]
        head.keep_alive = not close and (keep or not head.http10)
        head.upgrading = head.method == b"CONNECT" or (head.upgrade is not None and upgrade_token)
