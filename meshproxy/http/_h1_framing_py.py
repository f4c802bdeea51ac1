"""HTTP/1.1 message framing shared by both directions (RFC 9112), pure-Python twin half of ``_h1_c``.

Owns what a request and a response have in common once their heads are told apart: finding
where a head, a chunk-size line or a trailer section ends (CRLF only, bounded by ``limit``
bytes, resumed where the last read stopped), the field-line grammar, chunk sizes and
extensions, and ``Framer``, the state machine that walks a byte stream from head to body to the
next head: Content-Length counting, chunked decoding (trailers validated and dropped), bodies
delimited by the connection's close, and the tunnel after a head that switches protocols.
``Framer._on_block`` is the direction's: ``_h1_py.RequestParser`` and
``_h1_response_py.ResponseParser`` parse the head there and say how its body is framed.

Rules (the request parser's docstring numbers them for requests):
- a bare LF or bare CR is refused; CR and LF bytes before a start-line are skipped (§2.2);
- field-line = token ":" OWS value OWS, no obs-fold, no CTL but HTAB in a value (§5);
- chunk = 1 to 16 hex digits, extensions ``;name[=token|quoted-string]`` without whitespace,
  CRLF after its data (§7.1); trailer fields as field lines, counted like a head's.
Errors are ``MessageRefused`` 400 or 431 (a response parser turns them into its own 502).
Must not import asyncio, nor anything of meshproxy but ``errors``.
"""

from __future__ import annotations

from typing import Protocol

from meshproxy.http.errors import MessageRefused

TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
VALUE_CHARS = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
HEX_CHARS = b"0123456789abcdefABCDEF"
QDTEXT = bytes([0x09, 0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F), *range(0x80, 0x100)])
MAX_CL_DIGITS = 18
MAX_CHUNK_DIGITS = 16

# Framer states; ``_on_block`` returns the state after a head, or one of the two outcomes.
HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILERS, EOF_BODY, AFTER, DONE = range(9)
COMPLETE = -1  # the message ended at its head
TUNNEL = -2  # the bytes after the head are not HTTP/1.1 (the head's message is complete)

TOO_LARGE = b"request header block too large"
FRAMING_TOO_LARGE = b"request trailers or chunk extensions too large"
TOO_MANY = b"too many header fields"


def bad(reason: str) -> MessageRefused:
    return MessageRefused(400, b"bad request: " + reason.encode())


class MessageProtocol(Protocol):
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...


def codings(lines: list[bytes]) -> list[bytes]:
    """The transfer codings of every Transfer-Encoding line, in order (RFC 9112 §6.1)."""
    tokens = (t.strip(b" \t").lower() for t in b",".join(lines).split(b","))
    return [t for t in tokens if t]


def content_length(lengths: list[bytes]) -> int:
    """The one Content-Length line's value (1 to 18 digits: a next hop may hold it signed)."""
    if len(lengths) > 1:
        raise bad("duplicate Content-Length")
    value = lengths[0]
    if not value or value.translate(None, b"0123456789"):
        raise bad("invalid Content-Length")
    if len(value) > MAX_CL_DIGITS:  # found by the fuzzer: past 2^63 for a signed next hop
        raise bad("Content-Length over 18 digits")
    return int(value)


def name_value(line: bytes) -> tuple[bytes, bytes]:
    """A field line's name (as received) and value (OWS stripped), validated."""
    name, colon, value = line.partition(b":")
    if not colon or not name or name.translate(None, TOKEN_CHARS):
        if line[:1] in (b" ", b"\t"):
            raise bad("obsolete line folding")
        raise bad("invalid header field name")
    value = value.strip(b" \t")
    if value.translate(None, VALUE_CHARS):
        raise bad("invalid character in a header field value")
    return name, value


def chunk_size(line: bytes) -> int:
    """The size of a chunk-size line, without its CRLF."""
    if b"\r" in line:
        raise bad("bare CR")
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


class Framer:
    """Walks one connection's bytes message by message; ``_on_block`` is the direction's."""

    def __init__(self, protocol: MessageProtocol, limit: int, max_fields: int, after: int) -> None:
        self.protocol = protocol
        self.limit = limit
        self.max_fields = max_fields
        self.after = after  # the state after a message: HEAD (requests) or AFTER (one response)
        self.state = HEAD
        self.remaining = 0  # body or chunk bytes still to come
        self.buf: bytearray | None = None  # an incomplete head or line, while more is read
        self.scanned = 0  # bytes of ``buf`` already searched for line ends
        self.line_start = 0  # where the line being scanned starts in ``buf``
        self.begun = False  # _begin ran for the head being read

    def feed(self, data: bytes) -> bytes | None:
        """Parse ``data``; returns the bytes after a head that switched protocols (perhaps
        empty), or None when all of ``data`` was HTTP/1.1."""
        buf = self.buf
        if buf is not None:
            buf += data
            if self._scan(buf, 0) < 0:
                return None
            data = bytes(buf)
            self.buf = None
        return self._run(data)

    def _begin(self) -> None:
        """A head's first byte arrived."""

    def _on_block(self, block: bytes) -> int:
        """A complete head (without its final CRLF CRLF): the state its body starts in, or
        COMPLETE / TUNNEL. Sets ``remaining`` for a body of known length."""
        raise NotImplementedError

    def _scan(self, data: bytes | bytearray, start: int) -> int:
        """Where the head, trailer section or line starting at ``start`` ends (after its LF), or
        -1 when ``data`` ends first (the scan goes on from there next time)."""
        block = self.state != CHUNK_SIZE and self.state != CHUNK_END
        scan = start + self.scanned
        line = start + self.line_start
        stop = start + self.limit
        while True:
            i = data.find(b"\n", scan, stop)
            if i < 0:
                if len(data) >= stop:
                    raise MessageRefused(431, TOO_LARGE if self.state == HEAD else FRAMING_TOO_LARGE)
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
            if state == HEAD:
                while pos < n and (data[pos] == 0x0D or data[pos] == 0x0A):
                    pos += 1  # empty lines before a start-line
                if pos == n:
                    return None
                if not self.begun:
                    self.begun = True
                    self._begin()
                end = self._scan(data, pos)
                if end < 0:
                    self.buf = bytearray(data[pos:])
                    return None
                self.begun = False
                block = data[pos : end - 4]
                pos = end
                following = self._on_block(block)
                if following == TUNNEL:
                    self.state = DONE
                    return data[pos:]
                if following == COMPLETE:
                    self.state = self.after
                    protocol.on_message_complete()
                else:
                    self.state = following
            elif state in (BODY, CHUNK_DATA, EOF_BODY):
                if pos == n:
                    return None
                take = n - pos if state == EOF_BODY else min(self.remaining, n - pos)
                protocol.on_body(data if take == n else data[pos : pos + take])  # take == n: pos is 0
                pos += take
                if state != EOF_BODY:
                    self.remaining -= take
                    if not self.remaining:
                        if state == BODY:
                            self.state = self.after
                            protocol.on_message_complete()
                        else:
                            self.state = CHUNK_END
            elif state == AFTER:
                if pos < n:
                    raise bad("bytes after the complete response")
                return None
            elif state == DONE:
                return data[pos:]
            else:  # a chunk-size line, the CRLF after a chunk's data, or the trailer section
                if pos == n:
                    return None
                if state == CHUNK_END and data[pos] != 0x0D:
                    raise bad("chunk data not followed by CRLF")
                end = self._scan(data, pos)
                if end < 0:
                    self.buf = bytearray(data[pos:])
                    return None
                line = data[pos : end - 2]
                pos = end
                if state == CHUNK_END:
                    if line:
                        raise bad("chunk data not followed by CRLF")
                    self.state = CHUNK_SIZE
                elif state == CHUNK_SIZE:
                    size = chunk_size(line)
                    self.state = CHUNK_DATA if size else TRAILERS
                    self.remaining = size
                else:
                    lines = line[:-2].split(b"\r\n") if line else []
                    for count, field in enumerate(lines, 1):
                        self.field(field, count)  # validated and dropped (RFC 9110 §6.5.1)
                    self.state = self.after
                    protocol.on_message_complete()

    def field(self, line: bytes, count: int) -> tuple[bytes, bytes]:
        """The ``count``-th field line's name and value, validated in the compiled parser's
        order: a bare CR, the count, the name, the value."""
        if b"\r" in line:
            raise bad("bare CR")
        if count > self.max_fields:
            raise MessageRefused(431, TOO_MANY)
        return name_value(line)
