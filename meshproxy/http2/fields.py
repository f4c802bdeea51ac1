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
Must not depend on connections, streams or configuration.
"""

from __future__ import annotations

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
