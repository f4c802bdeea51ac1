"""The HTTP/1.1 request parser (RFC 9112), pure-Python twin of ``_h1_c.pyx``: bytes in, heads out.

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

Must not import asyncio; imports only ``codec`` (authority syntax) and ``errors``.
"""

from __future__ import annotations

from typing import Protocol

from meshproxy.http.codec import NEVER_HOP_BY_HOP, authority_ok
from meshproxy.http.errors import MessageRefused

TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
VALUE_CHARS = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
TARGET_CHARS = bytes(range(0x21, 0x7F))  # VCHAR; '#' refused on its own (a fragment)
HEX_CHARS = b"0123456789abcdefABCDEF"
QDTEXT = bytes([0x09, 0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F), *range(0x80, 0x100)])
MAX_CL_DIGITS = 18
MAX_CHUNK_DIGITS = 16

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

# Parser states.
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _DONE = range(7)

TOO_LARGE = b"request header block too large"
FRAMING_TOO_LARGE = b"request trailers or chunk extensions too large"


def bad(reason: str) -> MessageRefused:
    return MessageRefused(400, b"bad request: " + reason.encode())


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


def _codings(lines: list[bytes]) -> list[bytes]:
    """The transfer codings of every Transfer-Encoding line, in order (RFC 9112 §6.1)."""
    tokens = (t.strip(b" \t").lower() for t in b",".join(lines).split(b","))
    return [t for t in tokens if t]


def _chunk_size(line: bytes) -> int:
    """The size of a chunk-size line (rule 4), without its CRLF."""
    size, semi, ext = line.partition(b";")
    if not size or len(size) > MAX_CHUNK_DIGITS or size.translate(None, HEX_CHARS):
        raise bad("invalid chunk size")
    if semi and not _extensions_ok(b";" + ext):
        raise bad("invalid chunk extension")
    return int(size, 16)


def _extensions_ok(ext: bytes) -> bool:
    """``*( ";" token [ "=" ( token / quoted-string ) ] )``, no whitespace (RFC 9112 §7.1.1)."""
    i, n = 0, len(ext)
    while i < n:
        if ext[i] != 0x3B:  # ';'
            return False
        i = _token_end(ext, i + 1)
        if i < 0:
            return False
        if i < n and ext[i] == 0x3D:  # '='
            i += 1
            if i < n and ext[i] == 0x22:  # '"'
                i += 1
                while True:
                    if i >= n:
                        return False
                    c = ext[i]
                    if c == 0x22:
                        i += 1
                        break
                    if c == 0x5C:  # quoted-pair: HTAB, SP, VCHAR, obs-text
                        if i + 1 >= n or not (ext[i + 1] == 0x09 or 0x20 <= ext[i + 1] != 0x7F):
                            return False
                        i += 2
                    elif c in QDTEXT:
                        i += 1
                    else:
                        return False
            else:
                i = _token_end(ext, i)
                if i < 0:
                    return False
    return True


def _token_end(data: bytes, i: int) -> int:
    """The end of the token starting at ``i``, or -1 when there is none."""
    start = i
    while i < len(data) and data[i] in TOKEN_CHARS:
        i += 1
    return i if i > start else -1


class RequestParser:
    """Frames requests out of one connection's bytes (the module docstring's rules)."""

    def __init__(
        self, protocol: RequestProtocol, limit: int, max_fields: int, drop_underscores: bool
    ) -> None:
        self.protocol = protocol
        self.limit = limit
        self.max_fields = max_fields
        self.drop_underscores = drop_underscores
        self.state = _HEAD
        self.remaining = 0  # body or chunk bytes still to come
        self.buf: bytearray | None = None  # an incomplete head or line, while more is read
        self.scanned = 0  # bytes of ``buf`` already searched for line ends
        self.line_start = 0  # where the line being scanned starts in ``buf``
        self.begun = False  # on_message_begin was called for the head being read

    def feed(self, data: bytes) -> bytes | None:
        """Parse ``data``; returns the bytes after a tunnelled request's head (perhaps empty),
        or None when all of ``data`` was HTTP/1.1."""
        buf = self.buf
        if buf is not None:
            buf += data
            if self._scan(buf, 0) < 0:
                return None
            data = bytes(buf)
            self.buf = None
        return self._run(data)

    def _scan(self, data: bytes | bytearray, start: int) -> int:
        """Where the head, trailer section or line starting at ``start`` ends (after its LF), or
        -1 when ``data`` ends first (the scan goes on from there next time)."""
        block = self.state != _CHUNK_SIZE and self.state != _CHUNK_END
        limit = self.limit
        scan = start + self.scanned
        line = start + self.line_start
        stop = start + limit
        while True:
            i = data.find(b"\n", scan, stop)
            if i < 0:
                if len(data) >= stop:
                    too_large = TOO_LARGE if self.state == _HEAD else FRAMING_TOO_LARGE
                    raise MessageRefused(431, too_large)
                self.scanned = len(data) - start
                self.line_start = line - start
                return -1
            if i == line or data[i - 1] != 0x0D:
                raise bad("bare LF")
            if not block or i - 1 == line:
                self.scanned = self.line_start = 0
                return i + 1
            line = scan = i + 1

    def _run(self, data: bytes) -> bytes | None:
        protocol = self.protocol
        pos, n = 0, len(data)
        while True:
            state = self.state
            if state == _HEAD:
                while pos < n and (data[pos] == 0x0D or data[pos] == 0x0A):
                    pos += 1  # rule 1: empty lines before a request-line
                if pos == n:
                    return None
                if not self.begun:
                    self.begun = True
                    protocol.on_message_begin()
                end = self._scan(data, pos)
                if end < 0:
                    self.buf = bytearray(data[pos:])
                    return None
                self.begun = False
                head = self._head(data[pos : end - 4])
                pos = end
                if protocol.on_head(head):
                    self.state = _DONE
                    protocol.on_message_complete()
                    return data[pos:]
                if head.chunked:
                    self.state = _CHUNK_SIZE
                elif head.content_length > 0:
                    self.state = _BODY
                    self.remaining = head.content_length
                else:
                    protocol.on_message_complete()
            elif state in (_BODY, _CHUNK_DATA):
                if pos == n:
                    return None
                take = min(self.remaining, n - pos)
                protocol.on_body(data if take == n else data[pos : pos + take])  # take == n: pos is 0
                pos += take
                self.remaining -= take
                if not self.remaining:
                    if state == _BODY:
                        self.state = _HEAD
                        protocol.on_message_complete()
                    else:
                        self.state = _CHUNK_END
            elif state == _DONE:
                return data[pos:]
            else:  # a chunk-size line, the CRLF after a chunk's data, or the trailer section
                if pos == n:
                    return None
                if state == _CHUNK_END and data[pos] != 0x0D:
                    raise bad("chunk data not followed by CRLF")
                end = self._scan(data, pos)
                if end < 0:
                    self.buf = bytearray(data[pos:])
                    return None
                line = data[pos : end - 2]
                pos = end
                if state == _CHUNK_END:
                    if line:
                        raise bad("chunk data not followed by CRLF")
                    self.state = _CHUNK_SIZE
                elif state == _CHUNK_SIZE:
                    if b"\r" in line:
                        raise bad("bare CR")
                    size = _chunk_size(line)
                    self.state = _CHUNK_DATA if size else _TRAILERS
                    self.remaining = size
                else:
                    self._fields(line[:-2], None)  # validated and dropped (RFC 9110 §6.5.1)
                    self.state = _HEAD
                    protocol.on_message_complete()

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

    def _fields(self, block: bytes, head: RequestHead | None) -> None:
        """Field lines (CRLF-separated, no final CRLF): validated, counted, and classified
        into ``head`` (None: a trailer section, only validated)."""
        lines = block.split(b"\r\n") if block else []
        if head is None:
            for count, line in enumerate(lines, 1):
                self._field(line, count)
            return
        headers = head.headers
        codings: list[bytes] = []
        lengths: list[bytes] = []
        close = keep = upgrade_token = False
        named: list[bytes] = []
        drop = self.drop_underscores
        for count, line in enumerate(lines, 1):
            name, value = self._field(line, count)
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
                codings.append(value)
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
        if codings:
            if head.http10:
                raise bad("Transfer-Encoding in an HTTP/1.0 request")
            if lengths:
                raise bad("Content-Length with Transfer-Encoding")
            listed = _codings(codings)
            if listed != [b"chunked"]:
                if listed[-1:] == [b"chunked"]:  # RFC 9112 §6.1: 501 for a coding we cannot apply
                    raise MessageRefused(501, b"transfer codings other than chunked are not supported")
                raise bad("chunked must be the final transfer coding")
            head.chunked = True
        elif lengths:
            if len(lengths) > 1:
                raise bad("duplicate Content-Length")
            value = lengths[0]
            if not value or value.translate(None, b"0123456789"):
                raise bad("invalid Content-Length")
            if len(value) > MAX_CL_DIGITS:  # found by the fuzzer: past 2^63 for a signed next hop
                raise bad("Content-Length over 18 digits")
            head.content_length = int(value)
        if named:  # RFC 9110 §7.6.1: the fields Connection names are hop-by-hop too
            head.headers = [h for h in headers if h[0] not in named]
        head.keep_alive = not close and (keep or not head.http10)
        head.upgrading = head.method == b"CONNECT" or (head.upgrade is not None and upgrade_token)

    def _field(self, line: bytes, count: int) -> tuple[bytes, bytes]:
        """The ``count``-th field line's name (as received) and value (OWS stripped), validated
        (rule 3), in the compiled parser's order: a bare CR, the count, the name, the value."""
        if b"\r" in line:
            raise bad("bare CR")
        if count > self.max_fields:
            raise MessageRefused(431, b"too many header fields")
        return _name_value(line)


def _name_value(line: bytes) -> tuple[bytes, bytes]:
    name, colon, value = line.partition(b":")
    if not colon or not name or name.translate(None, TOKEN_CHARS):
        if line[:1] in (b" ", b"\t"):
            raise bad("obsolete line folding")
        raise bad("invalid header field name")
    value = value.strip(b" \t")
    if value.translate(None, VALUE_CHARS):
        raise bad("invalid character in a header field value")
    return name, value
