"""Which header fields cross an HTTP/2 hop, and how they are encoded on the far side.

Owns the per-field rules ``stream.py`` applies while it copies a header block from one side
to the other: fields that never cross (connection-specific ones, RFC 9113 §8.2.2, and those
the proxy sets itself) and credentials kept out of HPACK's dynamic tables (RFC 7541 §7.1).
h2's outbound normalisation, which applied the second rule, is off (``connection.py``).
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
