"""The request hash a route's ``hash_policy`` gives to ring-hash and maglev clusters.

Owns Envoy's combination rule: each policy that finds its input contributes the xxHash64 of
it; contributions combine as ``rotl(hash, 1) ^ next``; a ``terminal`` policy that produced a
value ends the walk. A request with no input for any policy gets no hash, and the balancer
then picks as if at random (Envoy does the same). Sans-I/O; must not import asyncio.
"""

from __future__ import annotations

from meshproxy.config.policy import HashPolicy
from meshproxy.upstream.lb.ring_hash import xxhash64

_MASK = (1 << 64) - 1


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None


def _cookie(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for n, v in headers:
        if n == b"cookie":
            for part in v.split(b";"):
                key, eq, value = part.strip().partition(b"=")
                if eq and key == name:
                    return value
    return None


def _query(target: bytes, name: bytes) -> bytes | None:
    _, sep, query = target.partition(b"?")
    if not sep:
        return None
    for part in query.split(b"&"):
        key, _, value = part.partition(b"=")
        if key == name:
            return value
    return None


def request_hash(
    policies: tuple[HashPolicy, ...],
    headers: list[tuple[bytes, bytes]],
    authority: bytes,
    target: bytes,
    peer_ip: bytes,
) -> int | None:
    """The request's hash under ``policies``, or None when no policy found its input."""
    result: int | None = None
    for policy in policies:
        kind = policy.kind
        name = policy.name.encode()
        if kind == "header":
            value = authority if name in (b":authority", b"host") else _header(headers, name)
        elif kind == "cookie":
            value = _cookie(headers, name)
        elif kind == "query_parameter":
            value = _query(target, name)
        else:
            value = peer_ip or None
        if value is None:
            continue
        h = xxhash64(value)
        result = h if result is None else (((result << 1) | (result >> 63)) & _MASK) ^ h
        if policy.terminal:
            break
    return result
