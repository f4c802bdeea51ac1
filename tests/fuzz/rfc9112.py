"""A strict reference model of HTTP/1.1 message framing (RFC 9112), the fuzzers' oracle.

Owns ``parse_requests`` and ``parse_responses``: bytes in, the messages a strict recipient would
frame out of them, and where and why it stopped. It is written from the RFC, not from the proxy,
and it is deliberately stricter than the RFC allows a recipient to be, so that "the proxy framed
it and the model did not" always means the proxy chose leniency:

- Lines end in CRLF only (§2.2: a bare CR is an error; a bare LF is only *allowed*, so refused),
  but for the empty lines before a start-line: CR and LF bytes there are skipped, as llhttp does.
- request-line = method SP request-target SP HTTP-version (§3), single spaces, version 1.0/1.1;
  the target is visible ASCII without ``#`` (RFC 9110 §7.1), origin-, absolute-, authority- (only
  for CONNECT) or asterisk-form (only for OPTIONS) (§3.2).
- field-line = field-name ":" OWS field-value OWS (§5): a token name, no whitespace before the
  colon (§5.1), no obs-fold (§5.2), no CTL but HTAB in a value (RFC 9110 §5.5).
- Exactly one valid ``Host`` in an HTTP/1.1 request (§3.2; none needed with an absolute-form target,
  whose authority a proxy uses instead, §3.2.2); uri-host [":" port] characters only.
- Framing (§6.1-6.3): Transfer-Encoding (every line, as one list) with ``chunked`` exactly once and
  last and no other coding; with Content-Length too, or in HTTP/1.0, refused. Otherwise exactly one
  Content-Length line holding one 1*DIGIT; otherwise no body (a request) or, for a response,
  the status and the request method decide (§6.3 items 1-2, 7).
- Chunks (§7.1): 1*HEXDIG size (at most 16 digits), extensions ``;name[=token|quoted-string]``
  without BWS, CRLF after the data, trailer lines validated like header lines.
- ``CONNECT`` and an ``Upgrade`` request end HTTP framing of the byte stream (§9.8, RFC 9110 §7.8):
  what follows is not a request this model frames.

Must not import anything of meshproxy: it is the independent side of a differential test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_TARGET = re.compile(rb"[\x21-\x22\x24-\x7e]+")  # VCHAR without '#'
_VERSION = re.compile(rb"HTTP/1\.[01]")
HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
_DIGITS = re.compile(rb"[0-9]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CHUNK_EXT = re.compile(
    rb'(?:;[!#$%&\'*+\-.^_`|~0-9A-Za-z]+(?:=(?:[!#$%&\'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"))?)*'
)
# §4 wants the SP before an empty reason phrase; llhttp and every client read ``HTTP/1.1 200``
# without it, and the proxy writes its own status-line, so no boundary depends on it.
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9]{2})(?: [\t\x20-\x7e\x80-\xff]*)?")
MAX_LINE = 64 * 1024


class Refused(Exception):
    """The model refuses the message: the byte stream is not valid HTTP/1.1 framing from here."""


class _Incomplete(Exception):
    """The bytes end inside a message."""


@dataclass(slots=True)
class Message:
    """One request (``method``, ``target``) or response (``status``) as the model frames it."""

    method: bytes = b""
    target: bytes = b""
    version: bytes = b""
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False

    def values(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]

    def tokens(self, name: bytes) -> list[bytes]:
        """The comma-separated list of every ``name`` line, lower-cased, empty elements dropped."""
        out = []
        for value in self.values(name):
            out += [t.strip(b" \t").lower() for t in value.split(b",") if t.strip(b" \t")]
        return out


@dataclass(slots=True)
class Framing:
    """What the model made of a byte stream: complete messages, the one the bytes end inside
    (``partial``), and how it ended: ``end`` (all bytes framed), ``incomplete``, ``refused`` (with
    ``reason``), ``tunnel`` (CONNECT or Upgrade: the rest is not HTTP)."""

    messages: list[Message]
    partial: Message | None
    state: str
    reason: str = ""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def line(self) -> bytes:
        data, pos = self.data, self.pos
        end = data.find(b"\r\n", pos, pos + MAX_LINE + 2)
        lf = data.find(b"\n", pos, end if end >= 0 else pos + MAX_LINE + 2)
        if lf >= 0 and (end < 0 or lf < end + 1):
            raise Refused("bare LF")
        if end < 0:
            if len(data) - pos > MAX_LINE:
                raise Refused("line too long")
            raise _Incomplete
        line = data[pos:end]
        if b"\r" in line:
            raise Refused("bare CR")
        self.pos = end + 2
        return line

    def take(self, n: int) -> bytes:
        piece = self.data[self.pos : self.pos + n]
        self.pos += len(piece)
        return piece


def _field_lines(r: _Reader, msg: Message | None) -> list[tuple[bytes, bytes]]:
    fields: list[tuple[bytes, bytes]] = []
    while True:
        line = r.line()
        if not line:
            return fields
        if line[:1] in (b" ", b"\t"):
            raise Refused("obs-fold")
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.fullmatch(name):
            raise Refused("invalid field name")
        value = value.strip(b" \t")
        if not _VALUE.fullmatch(value):
            raise Refused("control character in a field value")
        fields.append((name.lower(), value))


def _head(r: _Reader, msg: Message, request: bool) -> None:
    # §2.2: empty lines before a request-line are ignored; bare LFs and CRs there too, and before
    # a status-line, as llhttp and http-parser (Envoy, nginx) skip them: no boundary depends on
    # them (the last message has ended) and the proxy writes its own start-line.
    while r.data[r.pos : r.pos + 1] in (b"\r", b"\n"):
        r.pos += 1
    first = r.line()
    if request:
        parts = first.split(b" ")
        if len(parts) != 3:
            raise Refused("malformed request-line")
        msg.method, msg.target, msg.version = parts
        if not TOKEN.fullmatch(msg.method) or not _TARGET.fullmatch(msg.target):
            raise Refused("malformed request-line")
    else:
        m = _STATUS_LINE.fullmatch(first)
        if m is None:
            raise Refused("malformed status-line")
        msg.version, msg.status = first[:8], int(m[1])
    if not _VERSION.fullmatch(msg.version):
        raise Refused("unsupported HTTP version")
    msg.headers = _field_lines(r, msg)


def _check_request_target(msg: Message) -> None:
    target, method = msg.target, msg.method
    if target.startswith(b"/"):
        return
    if target == b"*":
        if method != b"OPTIONS":
            raise Refused("asterisk-form outside OPTIONS")
        return
    if method == b"CONNECT":
        if not HOST.fullmatch(target) or b":" not in target:
            raise Refused("invalid authority-form")
        return
    lower = target.lower()
    if not (lower.startswith(b"http://") or lower.startswith(b"https://")):
        raise Refused("invalid request-target")
    rest = target.split(b"://", 1)[1]
    authority = rest.split(b"/", 1)[0].split(b"?", 1)[0]
    if b"@" in authority or not authority or not HOST.fullmatch(authority):
        raise Refused("invalid authority in absolute-form")


def _length(msg: Message, request: bool) -> int | None:
    """The body length, or None for chunked; raises Refused. §6.3."""
    te = msg.values(b"transfer-encoding")
    cl = msg.values(b"content-length")
    if te:
        if cl:
            raise Refused("Content-Length with Transfer-Encoding")
        if msg.version == b"HTTP/1.0":
            raise Refused("Transfer-Encoding in HTTP/1.0")
        if msg.tokens(b"transfer-encoding") != [b"chunked"]:
            raise Refused("a transfer coding other than chunked, or chunked not once and last")
        return None
    if cl:
        if len(cl) != 1 or not _DIGITS.fullmatch(cl[0]) or len(cl[0]) > 18:
            raise Refused("invalid Content-Length")
        return int(cl[0])
    return 0 if request else -1


def _chunked(r: _Reader, msg: Message) -> None:
    while True:
        line = r.line()
        size, _, _ = line.partition(b";")
        if not _HEX.fullmatch(size) or not _CHUNK_EXT.fullmatch(line[len(size) :]):
            raise Refused("invalid chunk-size line")
        n = int(size, 16)
        if n == 0:
            trailers = _field_lines(r, msg)
            del trailers  # trailer fields are validated, not merged (RFC 9110 §6.5.1)
            return
        data = r.take(n)
        msg.body += data
        if len(data) < n:
            raise _Incomplete
        if r.data[r.pos : r.pos + 2] != b"\r\n":
            if len(r.data) - r.pos < 2 and b"\r\n".startswith(r.data[r.pos :]):
                raise _Incomplete
            raise Refused("chunk data not followed by CRLF")
        r.pos += 2


def parse_requests(data: bytes, *, declined_upgrades: bool = False) -> Framing:
    """The requests a strict server frames from ``data``, in order. ``declined_upgrades``: the
    server answers every Upgrade request without switching, so framing goes on after one."""
    r = _Reader(data)
    done: list[Message] = []
    while True:
        rest = data[r.pos :]
        if not rest.strip(b"\r\n") and b"\n" not in rest.replace(b"\r\n", b""):
            return Framing(done, None, "end")
        msg = Message()
        try:
            _head(r, msg, request=True)
            _check_request_target(msg)
            hosts = msg.values(b"host")
            absolute = not msg.target.startswith(b"/") and b"://" in msg.target
            # §3.2.2: a proxy replaces Host with an absolute-form target's authority, so there the
            # model (like every proxy) does not insist on the Host line §3.2 requires.
            if len(hosts) > 1 or (msg.version == b"HTTP/1.1" and not hosts and not absolute):
                raise Refused("not exactly one Host")
            if any(not HOST.fullmatch(h) for h in hosts):
                raise Refused("invalid Host")
            length = _length(msg, request=True)
            if length is None:
                _chunked(r, msg)
            else:
                msg.body = r.take(length)
                if len(msg.body) < length:
                    raise _Incomplete
        except _Incomplete:
            return Framing(done, msg if msg.method else None, "incomplete")
        except Refused as err:
            return Framing(done, msg if msg.headers else None, "refused", str(err))
        msg.complete = True
        done.append(msg)
        # An upgrade to h2c alone is not performed by a proxy (Envoy, and meshproxy, drop it and
        # carry on in HTTP/1.1), so framing goes on after it. Nor is one whose request has a
        # Content-Length body: RFC 9110 §7.8 lets a server ignore Upgrade, and meshproxy sends
        # such a request on as a plain one (its HTTP/1.1 rule 5), framing going on after it.
        protocols = {p.strip().lower() for v in msg.values(b"upgrade") for p in v.split(b",")} - {b""}
        upgrade = bool(protocols - {b"h2c"}) and b"upgrade" in msg.tokens(b"connection")
        upgrade = upgrade and not (length is not None and length > 0)
        if msg.method == b"CONNECT" or (upgrade and not declined_upgrades):
            return Framing(done, None, "tunnel")


def parse_responses(data: bytes, methods: list[bytes], *, closed: bool) -> Framing:
    """The responses a strict client frames from ``data``, answering requests of ``methods`` in
    order; ``closed``: the connection ended after ``data`` (it delimits a body without a length)."""
    r = _Reader(data)
    done: list[Message] = []
    index = 0
    while True:
        if r.pos == len(data):
            return Framing(done, None, "end")
        msg = Message()
        try:
            if index >= len(methods):
                raise Refused("a response to no request")
            _head(r, msg, request=False)
            method = methods[index]
            if msg.status == 101 or (200 <= msg.status < 300 and method == b"CONNECT"):
                done.append(msg)
                return Framing(done, None, "tunnel")
            if msg.status < 200 or msg.status in (204, 304) or method == b"HEAD":
                length = 0
                if msg.status < 200 and msg.values(b"content-length") + msg.values(b"transfer-encoding"):
                    raise Refused("a framing header in a 1xx response")
            else:
                length = _length(msg, request=False)
            if length is None:
                _chunked(r, msg)
            elif length < 0:
                msg.body = data[r.pos :]
                r.pos = len(data)
                if not closed:
                    raise _Incomplete
            else:
                msg.body = r.take(length)
                if len(msg.body) < length:
                    raise _Incomplete
        except _Incomplete:
            return Framing(done, msg if msg.status else None, "incomplete")
        except Refused as err:
            return Framing(done, msg if msg.status else None, "refused", str(err))
        msg.complete = True
        done.append(msg)
        if msg.status >= 200:
            index += 1
