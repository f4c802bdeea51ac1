"""Request mirroring (a route action's request_mirror_policies): which copies go where, sans-I/O.

Owns the decision for one forwarded request whose body is complete: per policy, its fraction
(drawn from the context's ``rng``), the mirror cluster (named, or taken from the request's
``cluster_header``; absent, unknown, HTTP/2, or without a healthy
host: dropped), its DEFAULT max_connections and max_requests breakers (full: dropped; the copy
never waits), and the copy itself: an HTTP/1.1 request with the request's method, target after
the route's rewrites, headers after the route's mutations, the host with ``-shadow`` appended
(before a port, as Envoy), and the body kept for it (``Exchange.body_copy``, bounded by the
route's buffer limit: past it the copy is dropped). Every copy is counted (``rq_mirrored``) or
dropped and counted (``rq_mirror_dropped``); the primary request never waits for one. The I/O
is ``http/mirror.py``. Must not import asyncio, sockets or either codec package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy.router.action import rewrite_target

if TYPE_CHECKING:
    from meshproxy.hcm.exchange import Exchange
    from meshproxy.upstream.breaker import ResourceManager
    from meshproxy.upstream.cluster import ClusterRuntime, Host

# Framing and hop-by-hop headers the copy states itself.
_DROP = frozenset((b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade", b"te"))

Copy = tuple["ClusterRuntime", "Host", "ResourceManager", bytes]


def copies(
    x: Exchange, method: bytes, authority: bytes, url: bytes, headers: list[tuple[bytes, bytes]]
) -> list[Copy]:
    """The copies to send now for a forwarded request whose body is complete (``x.plan.mirrors``
    is not empty); each was admitted by its cluster's breakers (``http/mirror.py`` releases them)."""
    ctx, plan, decision = x.ctx, x.plan, x.decision
    assert plan is not None and decision is not None
    stats = ctx.stats
    out: list[Copy] = []
    for policy in plan.mirrors:
        percent = policy.percent
        if ctx.rng.random() * percent.denominator >= percent.numerator:
            continue
        # cluster_header: a request without it, or naming no cluster, is not mirrored (Envoy).
        target_cluster = policy.cluster or _header(headers, policy.cluster_header)
        cluster = ctx.clusters.get(target_cluster) if target_cluster else None
        host = cluster.pick() if cluster is not None and cluster.config.http2 is None else None
        rm = cluster.breakers.default if cluster is not None else None
        if (
            x.body_copy is None
            or cluster is None
            or host is None
            or rm is None
            or not cluster.can_connect(rm)
            or not cluster.admit_request(rm, b"")
        ):
            stats.rq_mirror_dropped += 1
            continue
        stats.rq_mirrored += 1
        cluster.stats.upstream_rq_total += 1
        name = plan.host or authority
        if policy.shadow_suffix:
            name = _shadow(name)
        target = rewrite_target(decision.route, url) if plan.rewrites else url  # type: ignore[arg-type]  # routed
        body = b"".join(x.body_copy)
        parts = [method, b" ", target, b" HTTP/1.1\r\nhost: ", name, b"\r\n"]
        for n, v in headers:
            if n not in _DROP:
                parts += (n, b": ", v, b"\r\n")
        parts.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        parts.append(body)
        out.append((cluster, host, rm, b"".join(parts)))
    return out


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    return next((v for n, v in headers if n == name), b"").decode("latin-1")


def _shadow(authority: bytes) -> bytes:
    """``host-shadow``, a port kept after it (``[::1]`` has none: its last colon is inside)."""
    host, colon, port = authority.rpartition(b":")
    if colon and port.isdigit():
        return host + b"-shadow:" + port
    return authority + b"-shadow"
