"""Which header fields cross an HTTP/2 hop, how they are encoded there, and which are refused.

Owns the per-field rules ``stream.py`` applies while it copies a header block from one side
to the other: fields that never cross (connection-specific ones, RFC 9113 §8.2.2, and those
the proxy sets itself) and credentials kept out of HPACK's dynamic tables (RFC 7541 §7.1).
h2's outbound normalisation, which applied the second rule, is off (``connection.py``).

Also what a client's header block must be before anything of it crosses (``checked``), on top of
what h2's inbound validation already refuses (upper case, CTLs, space, DEL and non-ASCII in
names; NUL, CR, LF and surrounding whitespace in values; connection-specific fields; pseudo-header
rules): a name must be an RFC 9110 §5.6.2 token (``x(y)`` is not), ``:method`` a token, ``:path``
origin-form or ``*`` of visible ASCII without a fragment, ``:authority`` an RFC 3986 authority
without userinfo (RFC 9113 §8.3.1), any other value free of the control characters RFC 9110 §5.5
keeps out of a field value (HTAB aside; RFC 9113 §8.2.1 only forbids NUL, CR and LF, nghttp2
refuses the rest too). Each would otherwise reach an HTTP/1.1 upstream inside its request line or
head (issue 12, finding 16; the CTLs in values found by the http2_frames fuzzer). One table
lookup per byte of the block, in C.

And how a request block splits into the stream's inputs (``split``: routing inputs, the fields
that are the proxy's to set, the fields that cross). ``request_head`` is both steps, the h2
twin's; the compiled codec's does them in one pass in C and skips what libnghttp2 already
enforced (``_codec_c.request_head``, the same results: ``tests/unit/http2``). ``response_head``
is the same for an upstream's response block.

Must not depend on connections, streams or configuration.
"""

from __future__ import annotations

from typing import TypeAlias

from hpack import NeverIndexedHeaderTuple

# Request fields that never cross a hop or that the stream sets itself.
REQUEST_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-client-cert",
        b"x-request-id",
    }
)
RESPONSE_DROP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)
# h2's (and nghttp2's, and Firefox's) rule: authorization fields always, cookies under 20 bytes,
# which a dictionary attack on the compressed size could recover.
SENSITIVE = frozenset({b"authorization", b"proxy-authorization", b"cookie"})


def never_indexed(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    """``(name, value)`` for a ``SENSITIVE`` name: marked never-indexed if the rule holds."""
    if name != b"cookie" or len(value) < 20:
        return NeverIndexedHeaderTuple(name, value)
    return (name, value)


def _table(allowed: bytes) -> bytes:
    """A ``bytes.translate`` table: allowed bytes map to themselves, every other byte to NUL."""
    return bytes(i if i in allowed else 0 for i in range(256))


# One translate and one ``in`` per field, in C: a fifth of a regular expression's cost (these
# checks were 9 % of the proxy's CPU per request with the compiled codec).
_TCHAR = _table(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_PATH = _table(bytes(c for c in range(0x21, 0x7F) if c != 0x23))  # visible ASCII but '#'
_AUTHORITY = _table(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;=[]:")
_VALUE = _table(bytes(c for c in range(256) if c == 0x09 or (c >= 0x20 and c != 0x7F)))  # no CTL but HTAB


def _valid_pseudo(name: bytes, value: bytes) -> bool:
    if name == b":path":
        return (value[:1] == b"/" and 0 not in value.translate(_PATH)) or value == b"*"
    if name == b":method":
        return bool(value) and 0 not in value.translate(_TCHAR)
    if name == b":authority":
        return 0 not in value.translate(_AUTHORITY)
    return True


class Malformed(ValueError):
    """A header block refused (RFC 9113 §8.1.1: the stream is reset with PROTOCOL_ERROR)."""


class Underscored(Malformed):
    """A header name with an underscore under ``headers_with_underscores: REJECT_REQUEST``."""


def checked(headers: list[tuple[bytes, bytes]], underscores: str) -> tuple[list[tuple[bytes, bytes]], int]:
    """``headers`` as they may cross, and how many underscored names were dropped.

    ``underscores`` is ``headers_with_underscores``: ALLOW, REJECT_REQUEST (raises
    ``Underscored``) or DROP_HEADER. Raises ``Malformed`` naming the field otherwise refused.
    """
    strict = underscores != "ALLOW"
    dropped = 0
    for name, value in headers:
        if name[0] == 0x3A:
            if not _valid_pseudo(name, value):
                raise Malformed(f"invalid {name.decode()} {value[:64]!r}")
        elif 0 in name.translate(_TCHAR):
            raise Malformed(f"invalid header name {name[:64]!r}")
        if 0 in value.translate(_VALUE):
            raise Malformed(f"control character in the value of {name[:64]!r}")
        elif strict and b"_" in name:
            if underscores == "REJECT_REQUEST":
                raise Underscored(f"header name with an underscore {name[:64]!r}")
            dropped += 1
    if dropped:
        headers = [h for h in headers if h[0][0] == 0x3A or b"_" not in h[0]]
    return headers, dropped


# What ``split`` hands ``H2Stream``: :method, :path, :authority (lower case; else Host's), :scheme,
# x-forwarded-for, x-forwarded-proto, x-request-id, content-type (the last one), the fields that
# cross (credentials never-indexed) and how many underscored names were dropped.
RequestHead: TypeAlias = tuple[
    bytes,
    bytes,
    bytes | None,
    bytes,
    bytes | None,
    bytes | None,
    bytes | None,
    bytes | None,
    list[tuple[bytes, bytes]],
    int,
]


def split(headers: list[tuple[bytes, bytes]], dropped: int = 0) -> RequestHead:
    """A request block (already ``checked``, or from the HTTP/1.1 codec) as ``RequestHead``."""
    method = url = scheme = b""
    authority = xff = xfp = request_id = content_type = None
    kept: list[tuple[bytes, bytes]] = []
    for header in headers:
        name, value = header
        if name[0] == 0x3A:  # pseudo-header
            if name == b":method":
                method = value
            elif name == b":path":
                url = value
            elif name == b":authority":
                authority = value.lower()
            elif name == b":scheme":
                scheme = value
        elif name in REQUEST_DROP:
            if name == b"host" and authority is None:
                authority = value.lower()
            elif name == b"x-forwarded-for":
                xff = value
            elif name == b"x-forwarded-proto":
                xfp = value
            elif name == b"x-request-id":
                request_id = value
        else:
            if name == b"content-type":
                content_type = value
            elif name in SENSITIVE:
                header = never_indexed(name, value)
            kept.append(header)
    return method, url, authority, scheme, xff, xfp, request_id, content_type, kept, dropped


def request_head(headers: list[tuple[bytes, bytes]], underscores: str) -> RequestHead:
    """A client's request block ``checked`` and ``split``: raises ``Malformed`` as ``checked``."""
    return split(*checked(headers, underscores))


def response_head(headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes | None, list[tuple[bytes, bytes]]]:
    """An upstream's response block: its status (0 unless three digits), the grpc-status of a
    trailers-only response (the last one), and the fields that cross (credentials never-indexed,
    without :status, which the stream puts back)."""
    status = 0
    grpc_status = None
    out: list[tuple[bytes, bytes]] = []
    for header in headers:
        name, value = header
        if name == b":status":
            status = int(value) if len(value) == 3 and value.isdigit() else 0
        elif name in SENSITIVE:
            out.append(never_indexed(name, value))
        elif name not in RESPONSE_DROP:
            if name == b"grpc-status":
                grpc_status = value
            out.append(header)
    return status, grpc_status, out
