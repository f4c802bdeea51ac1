"""Upstream policy end to end with upstreams that fail on purpose: outlier ejection and
return, circuit-breaker overflow under concurrent load, priority failover and back driven by
active health checks, hash-based affinity, least-request balancing and the local rate limit,
each asserted from the client's side and from the proxy's counters."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web

from .harness import addr, bootstrap, cluster, eventually, http_listener, proxy_to, route, running_proxy
from .upstreams import aiohttp_upstream


@dataclass
class Behaviour:
    """What a switchable upstream does now; tests flip it while traffic flows."""

    name: str
    status: int = 200
    delay: float = 0.0
    healthy: bool = True
    gate: asyncio.Event | None = None  # when set, requests wait for it
    hits: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def switchable(b: Behaviour) -> AsyncIterator[int]:
    async def handle(request: web.Request) -> web.Response:
        if request.path == "/healthz":
            return web.Response(status=200 if b.healthy else 503, text="hc")
        b.hits += 1
        b.arrived.set()
        if b.gate is not None:
            await b.gate.wait()
        if b.delay:
            await asyncio.sleep(b.delay)  # the upstream's own latency, not synchronisation
        return web.Response(status=b.status, text=b.name, headers={"x-served-by": b.name})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def one_cluster(
    ports: list[int], *, routes: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    return bootstrap([http_listener(routes or [route()])], [cluster("backend", *ports, **extra)])


async def served_by(client: httpx.AsyncClient, url: str, n: int, **kw: Any) -> Counter[str]:
    out: Counter[str] = Counter()
    for _ in range(n):
        r = await client.get(url, **kw)
        out[r.headers.get("x-served-by", str(r.status_code))] += 1
    return out


async def test_outlier_detection_ejects_a_failing_host_and_lets_it_back() -> None:
    bad, good = Behaviour("bad", status=503), Behaviour("good")
    outlier = {
        "consecutive_5xx": 3,
        "interval": "0.1s",
        "base_ejection_time": "0.5s",
        "max_ejection_percent": 100,
    }
    async with (
        switchable(bad) as p1,
        switchable(good) as p2,
        running_proxy(one_cluster([p1, p2], outlier_detection=outlier)) as proxy,
    ):
        stats = proxy.cluster_stats()
        async with httpx.AsyncClient() as client:
            await served_by(client, proxy.url(), 8)
            assert stats.outlier_detection_ejections_enforced_total == 1
            assert stats.outlier_detection_ejections_active == 1
            # While ejected, every request lands on the good host.
            assert await served_by(client, proxy.url(), 20) == Counter({"good": 20})
            bad.status = 200
            await eventually(lambda: stats.outlier_detection_ejections_active == 0, what="un-ejection")
            seen = await served_by(client, proxy.url(), 20)
    assert seen["bad"] >= 5 and seen["good"] >= 5
    assert stats.outlier_detection_ejections_by_kind == {"consecutive_5xx": 1}


async def test_max_requests_overflow_is_a_fast_503_uo() -> None:
    gate = asyncio.Event()
    slow = Behaviour("slow", gate=gate)
    breakers = {"thresholds": [{"max_requests": 2}]}
    async with (
        switchable(slow) as port,
        running_proxy(one_cluster([port], circuit_breakers=breakers)) as proxy,
    ):
        stats = proxy.cluster_stats()
        async with httpx.AsyncClient(timeout=10) as client:
            tasks = [asyncio.create_task(client.get(proxy.url())) for _ in range(2)]
            await eventually(lambda: slow.hits == 2, what="two requests at the upstream")
            assert stats.rq_open == 1 and stats.remaining_rq == 0
            refused = [await client.get(proxy.url()) for _ in range(5)]
            gate.set()
            done = await asyncio.gather(*tasks)
        assert stats.rq_open == 0
    assert [r.status_code for r in refused] == [503] * 5
    assert all(r.headers.get("x-envoy-overloaded") == "true" for r in refused)
    assert [r.status_code for r in done] == [200, 200]
    assert stats.upstream_rq_pending_overflow == 5


async def test_max_connections_queues_then_overflows_pending() -> None:
    gate = asyncio.Event()
    slow = Behaviour("slow", gate=gate)
    breakers = {"thresholds": [{"max_connections": 1, "max_pending_requests": 1}]}
    async with (
        switchable(slow) as port,
        running_proxy(one_cluster([port], circuit_breakers=breakers)) as proxy,
    ):
        stats = proxy.cluster_stats()
        async with httpx.AsyncClient(timeout=10) as client:
            first = asyncio.create_task(client.get(proxy.url()))
            await eventually(lambda: slow.hits == 1, what="first request upstream")
            second = asyncio.create_task(client.get(proxy.url()))
            await eventually(lambda: stats.upstream_rq_pending_active == 1, what="one pending")
            third = await client.get(proxy.url())
            gate.set()
            a, b = await asyncio.gather(first, second)
    assert third.status_code == 503
    assert (a.status_code, b.status_code) == (200, 200)
    assert stats.upstream_rq_pending_total == 1 and stats.upstream_rq_pending_overflow == 1
    assert stats.upstream_rq_pending_active == 0 and stats.upstream_cx_overflow >= 1


def _priority_cluster(p0: int, p1: int) -> dict[str, Any]:
    return {
        "name": "backend",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "backend",
            "endpoints": [
                {"priority": 0, "lb_endpoints": [{"endpoint": {"address": addr("127.0.0.1", p0)}}]},
                {"priority": 1, "lb_endpoints": [{"endpoint": {"address": addr("127.0.0.1", p1)}}]},
            ],
        },
        "health_checks": [
            {
                "timeout": "0.5s",
                "interval": "0.05s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 2,
                "http_health_check": {"path": "/healthz"},
            }
        ],
    }


async def test_priority_failover_and_back_follows_health_checks() -> None:
    primary, backup = Behaviour("primary"), Behaviour("backup")
    async with switchable(primary) as p0, switchable(backup) as p1:
        doc = bootstrap([http_listener([route()])], [_priority_cluster(p0, p1)])
        async with running_proxy(doc) as proxy:
            stats = proxy.cluster_stats()
            await eventually(lambda: stats.health_check_healthy == 2, what="both hosts healthy")
            async with httpx.AsyncClient() as client:
                assert await served_by(client, proxy.url(), 10) == Counter({"primary": 10})
                primary.healthy = False
                await eventually(lambda: stats.health_check_healthy == 1, what="primary unhealthy")
                assert await served_by(client, proxy.url(), 10) == Counter({"backup": 10})
                primary.healthy = True
                await eventually(lambda: stats.health_check_healthy == 2, what="primary back")
                assert await served_by(client, proxy.url(), 10) == Counter({"primary": 10})
            assert stats.health_check_failure >= 1 and stats.health_check_success >= 4


async def test_ring_hash_keeps_a_key_on_one_host() -> None:
    ups = [Behaviour(f"u{i}") for i in range(3)]
    routes = [route(hash_policy=[{"header": {"header_name": "x-user"}}])]
    async with switchable(ups[0]) as a, switchable(ups[1]) as b, switchable(ups[2]) as c:
        doc = one_cluster([a, b, c], routes=routes, lb_policy="RING_HASH")
        async with running_proxy(doc) as proxy, httpx.AsyncClient() as client:
            per_user = {
                user: await served_by(client, proxy.url(), 5, headers={"x-user": user})
                for user in (f"user-{i}" for i in range(12))
            }
    assert all(len(hosts) == 1 for hosts in per_user.values())
    assert len({next(iter(h)) for h in per_user.values()}) >= 2  # keys spread over hosts


async def test_least_request_avoids_the_busy_host() -> None:
    gate = asyncio.Event()
    busy, idle = Behaviour("busy", gate=gate), Behaviour("idle")
    lr = {"lb_policy": "LEAST_REQUEST", "least_request_lb_config": {"choice_count": 5}}
    async with (
        switchable(busy) as p1,
        switchable(idle) as p2,
        running_proxy(one_cluster([p1, p2], **lr)) as proxy,
        httpx.AsyncClient(timeout=10) as client,
    ):
        stuck: list[asyncio.Task[httpx.Response]] = []
        landed: Counter[str] = Counter()
        for _ in range(40):
            before = busy.hits
            task = asyncio.create_task(client.get(proxy.url()))
            await eventually(lambda t=task, n=before: t.done() or busy.hits > n, what="landed")
            if task.done():
                landed[task.result().headers["x-served-by"]] += 1
            else:
                landed["busy"] += 1
                stuck.append(task)
        gate.set()
        await asyncio.gather(*stuck)
    # Once one request is stuck on "busy", a pick lands there only when all five choices
    # drew it (1 in 32); round robin would send it half of them.
    assert landed["idle"] >= 32, landed


async def test_local_rate_limit_refuses_over_budget() -> None:
    rl = {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "rl",
            "token_bucket": {"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "60s"},
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        },
    }
    up = Behaviour("up")
    async with switchable(up) as port:
        listener = http_listener([route()])
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"] = [rl, *hcm["http_filters"]]
        async with running_proxy(bootstrap([listener], [cluster("backend", port)])) as proxy:
            async with httpx.AsyncClient() as client:
                codes = [(await client.get(proxy.url())).status_code for _ in range(5)]
            stats = proxy.http_stats()
    assert codes == [200, 200, 200, 429, 429]
    assert up.hits == 3
    assert (stats.local_rate_limit_ok, stats.local_rate_limit_rate_limited) == (3, 2)


async def test_an_ejection_survives_config_swaps() -> None:
    """Runtime state carries across a swap by endpoint key: a route change leaves the cluster
    alone, and a change to the cluster itself hands its ejections to the new runtime."""
    import json

    from meshproxy.config.bootstrap import parse_bootstrap

    bad, good = Behaviour("bad", status=503), Behaviour("good")
    outlier = {"consecutive_5xx": 2, "base_ejection_time": "30s", "max_ejection_percent": 100}
    async with switchable(bad) as p1, switchable(good) as p2:
        doc = one_cluster([p1, p2], outlier_detection=outlier)
        async with running_proxy(doc) as proxy:
            stats = proxy.cluster_stats()
            async with httpx.AsyncClient() as client:
                await served_by(client, proxy.url(), 6)
            assert stats.outlier_detection_ejections_active == 1
            # 1. an unrelated route change (new connections see the new listener config)
            routes = [{"match": {"prefix": "/other"}, "direct_response": {"status": 204}}, route()]
            doc2 = one_cluster([p1, p2], routes=routes, outlier_detection=outlier)
            await proxy.server.apply(parse_bootstrap(json.dumps(doc2), source="swap"))
            async with httpx.AsyncClient() as client:
                assert (await client.get(proxy.url("/other"))).status_code == 204
                assert await served_by(client, proxy.url(), 10) == Counter({"good": 10})
            # 2. the cluster itself changes (a new runtime inherits the state)
            doc3 = one_cluster([p1, p2], routes=routes, outlier_detection=outlier, connect_timeout="2s")
            await proxy.server.apply(parse_bootstrap(json.dumps(doc3), source="swap"))
            assert proxy.server.clusters.get("backend").config.connect_timeout == 2.0
            async with httpx.AsyncClient() as client:
                assert await served_by(client, proxy.url(), 10) == Counter({"good": 10})
            assert stats.outlier_detection_ejections_active == 1
            assert stats.outlier_detection_ejections_enforced_total == 1


async def test_tcp_keepalive_is_set_on_upstream_sockets() -> None:
    """upstream_connection_options.tcp_keepalive: the pooled connection's socket carries
    SO_KEEPALIVE and the three values given (read back from the kernel)."""
    keepalive = {"keepalive_probes": 3, "keepalive_time": 30, "keepalive_interval": 5}
    async with aiohttp_upstream() as up:
        extra = {"upstream_connection_options": {"tcp_keepalive": keepalive}}
        async with proxy_to(up, cluster_extra=extra) as proxy, httpx.AsyncClient() as client:
            assert (await client.get(proxy.url("/"))).status_code == 200
            runtime = proxy.server.clusters.get("backend")
            assert runtime is not None
            (conn,) = runtime.hosts[0].idle
            sock = conn.transport.get_extra_info("socket")  # type: ignore[attr-defined]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            got = [
                sock.getsockopt(socket.IPPROTO_TCP, o)
                for o in (socket.TCP_KEEPCNT, socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL)
            ]
    assert got == [3, 30, 5]
