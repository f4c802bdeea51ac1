"""One connection manager for both codecs: behaviours that once differed between HTTP/1.1 and
HTTP/2, each asserted through both (httpx over HTTP/1.1, and over HTTP/2 with prior knowledge).

Regression tests of issue 11: a bodiless HTTP/2 GET relayed over a warm HTTP/1.1 connection
(D2); the local rate limit, ``upstream_rq_retry_success``, route response headers on local
replies, per-status upstream counters and ``grpc-timeout`` on both codecs (D3);
``upstream_rq_time`` against ``downstream_rq_time`` (D5); the HIGH priority's circuit
breakers (D6); and one configuration snapshot per request across an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from h2 import events as ev

from meshproxy.config.bootstrap import parse_bootstrap

from .h2_client import RawH2
from .harness import bootstrap, cluster, eventually, http_listener, route, running_proxy
from .upstreams import counting_upstream, raw_upstream, read_request

CODECS = ("HTTP/1.1", "HTTP/2")
RATELIMIT = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"


def client(codec: str, **kw: Any) -> httpx.AsyncClient:
    if codec == "HTTP/2":
        return httpx.AsyncClient(http1=False, http2=True, **kw)
    return httpx.AsyncClient(**kw)


async def status_of(codec: str, port: int, path: str) -> int:
    """One GET on a connection of its own."""
    if codec == "HTTP/1.1":
        async with httpx.AsyncClient() as c:
            return (await c.get(f"http://127.0.0.1:{port}{path}")).status_code
    h2 = await RawH2.open(port)
    try:
        sid = h2.request(path)
        await h2.flush()
        await h2.read_until(lambda _e: h2.ended(sid))
        return int(h2.headers_of(sid)[b":status"])
    finally:
        await h2.close()


class Gated:
    """A raw HTTP/1.1 upstream: records each request head; answers ``replies`` in turn (the
    last one from then on), each once ``gate`` is set; None in ``replies`` never answers."""

    def __init__(self, *replies: bytes | None) -> None:
        self.replies = list(replies)
        self.heads: list[bytes] = []
        self.connections = 0  # connections the proxy opened to it
        self.arrived = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head, _ = await read_request(reader)
                n = len(self.heads)
                self.heads.append(head)
                self.arrived.set()
                reply = self.replies[min(n, len(self.replies) - 1)]
                if reply is None:
                    await asyncio.Event().wait()  # hangs until the proxy gives up
                await self.gate.wait()
                writer.write(reply)  # type: ignore[arg-type]
                await writer.drain()
        writer.close()


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"


@contextlib.asynccontextmanager
async def gated(*replies: bytes | None) -> AsyncIterator[tuple[Gated, int]]:
    up = Gated(*replies)
    async with raw_upstream(up.serve) as port:
        yield up, port


def with_filters(listener: dict[str, Any], *filters: dict[str, Any]) -> dict[str, Any]:
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [*filters, *hcm["http_filters"]]
    return listener


# ---------------------------------------------------------------------------- D2


async def test_bodiless_http2_get_over_a_warm_http1_connection_has_no_framing() -> None:
    """The HEADERS frame ended the stream: the upstream request is a bare head, even when an
    idle pooled connection takes it at once (it used to start chunked, then send ``0``)."""
    async with counting_upstream() as (port, heads):
        doc = bootstrap([http_listener([route()])], [cluster("backend", port)])
        async with running_proxy(doc) as proxy:
            h2 = await RawH2.open(proxy.port())
            try:
                for n in range(3):  # the first warms the pool; the others reuse its connection
                    sid = h2.request(f"/{n}")
                    await h2.flush()
                    await h2.read_until(lambda _e, sid=sid: h2.ended(sid))
                    assert h2.headers_of(sid)[b":status"] == b"200"
            finally:
                await h2.close()
            assert proxy.cluster_stats().upstream_cx_total == 1
    assert [h.split(b" ", 2)[:2] for h in heads] == [[b"GET", b"/0"], [b"GET", b"/1"], [b"GET", b"/2"]]
    for head in heads:
        assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()


# ---------------------------------------------------------------------------- D3


@pytest.mark.parametrize("codec", CODECS)
async def test_local_rate_limit_applies_to_every_codec(codec: str) -> None:
    rl = {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": RATELIMIT,
            "stat_prefix": "rl",
            "token_bucket": {"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "60s"},
            "filter_enabled": {"default_value": {"numerator": 100}},
            "filter_enforced": {"default_value": {"numerator": 100}},
        },
    }
    async with gated(OK) as (up, port):
        doc = bootstrap([with_filters(http_listener([route()]), rl)], [cluster("backend", port)])
        async with running_proxy(doc) as proxy, client(codec) as c:
            codes = [(await c.get(proxy.url())).status_code for _ in range(5)]
            stats = proxy.http_stats()
    assert codes == [200, 200, 200, 429, 429]
    assert len(up.heads) == 3
    assert (stats.local_rate_limit_ok, stats.local_rate_limit_rate_limited) == (3, 2)


@pytest.mark.parametrize("codec", CODECS)
async def test_a_retry_that_lands_counts_retry_success(codec: str) -> None:
    policy = {"retry_on": "5xx", "num_retries": 2, "retry_back_off": {"base_interval": "0.001s"}}
    async with gated(UNAVAILABLE, OK) as (up, port):
        doc = bootstrap([http_listener([route(retry_policy=policy)])], [cluster("backend", port)])
        async with running_proxy(doc) as proxy, client(codec) as c:
            assert (await c.get(proxy.url())).status_code == 200
            stats = proxy.cluster_stats()
    assert len(up.heads) == 2
    assert stats.upstream_rq_retry == 1 and stats.upstream_rq_retry_success == 1


@pytest.mark.parametrize("codec", CODECS)
async def test_route_response_headers_reach_local_replies_of_the_route(codec: str) -> None:
    added = [{"header": {"key": "x-route", "value": "yes"}}]
    async with gated(None) as (_, port):
        routes = [{**route(timeout="0.2s"), "response_headers_to_add": added}]
        doc = bootstrap([http_listener(routes)], [cluster("backend", port)])
        async with running_proxy(doc) as proxy, client(codec) as c:
            r = await c.get(proxy.url())
    assert r.status_code == 504 and r.headers.get("x-route") == "yes"


@pytest.mark.parametrize("codec", CODECS)
async def test_the_routers_answer_to_an_upstream_timeout_counts_as_upstream_5xx(codec: str) -> None:
    """Envoy charges the cluster's upstream_rq_<code> for the 504 it answers on an upstream
    timeout, whatever the downstream codec."""
    async with gated(None) as (_, port):
        doc = bootstrap([http_listener([route(timeout="0.2s")])], [cluster("backend", port)])
        async with running_proxy(doc) as proxy, client(codec) as c:
            assert (await c.get(proxy.url())).status_code == 504
            assert (await c.get(proxy.url("/again"))).status_code == 504
            stats = proxy.cluster_stats()
    assert stats.upstream_rq_xx[5] == 2 and stats.upstream_rq_timeout == 2


@pytest.mark.parametrize("codec", CODECS)
async def test_grpc_timeout_is_capped_rewritten_and_honoured_on_both_codecs(codec: str) -> None:
    async with gated(None) as (up, port):
        routes = [route(timeout="30s", max_stream_duration={"grpc_timeout_header_max": "0.3s"})]
        doc = bootstrap([http_listener(routes)], [cluster("backend", port)])
        headers = {"content-type": "application/grpc", "grpc-timeout": "10S", "te": "trailers"}
        async with running_proxy(doc) as proxy, client(codec) as c:
            loop = asyncio.get_running_loop()
            started = loop.time()
            r = await c.post(proxy.url("/pkg.Svc/Call"), content=b"\0\0\0\0\0", headers=headers)
            took = loop.time() - started
    assert took < 5.0  # the 0.3 s cap, not the asked 10 s nor the 30 s route timeout
    if codec == "HTTP/2":
        assert r.headers.get("grpc-status") == "4"  # a gRPC local reply: DEADLINE_EXCEEDED
    else:
        assert r.status_code == 504
    assert len(up.heads) == 1
    sent = [line for line in up.heads[0].split(b"\r\n") if line.lower().startswith(b"grpc-timeout")]
    assert sent == [b"grpc-timeout: 300m"]


# ---------------------------------------------------------------------------- D5


async def test_upstream_time_ends_with_the_upstream_response_http1() -> None:
    """The client takes its time over the request head; the upstream answers at once: the
    downstream time includes that wait, the upstream time does not."""
    async with gated(OK) as (_, port):
        doc = bootstrap([http_listener([route()])], [cluster("backend", port)])
        async with running_proxy(doc) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port())
            writer.write(b"GET / HTTP/1.1\r\n")
            await writer.drain()
            await asyncio.sleep(0.4)  # a slow client, on purpose (not a synchronisation)
            writer.write(b"host: x\r\n\r\n")
            await writer.drain()
            assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
            writer.close()
            ds, cs = proxy.http_stats(), proxy.cluster_stats()
            await eventually(lambda: ds.downstream_rq_completed == 1)
    assert ds.downstream_rq_time.sum >= 350  # the 0.4 s wait (uvloop sleeps on a millisecond clock)
    assert cs.upstream_rq_time.sum < ds.downstream_rq_time.sum - 300


async def test_upstream_time_ends_with_the_upstream_response_http2() -> None:
    """The upstream's whole response arrives at once; the HTTP/2 client opens its window late:
    the downstream time includes the wait, the upstream time does not."""
    size = 300_000  # over the client's 64 KiB window, within the proxy's buffer

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"x" * size)
            await writer.drain()
            await reader.read()
        writer.close()

    async with raw_upstream(big) as port:
        doc = bootstrap([http_listener([route()])], [cluster("backend", port)])
        async with running_proxy(doc) as proxy:
            h2 = await RawH2.open(proxy.port())
            try:
                sid = h2.request("/")
                await h2.flush()
                await h2.read_until(
                    lambda e: sum(len(x.data) for x in e if isinstance(x, ev.DataReceived)) >= 65535
                )
                await asyncio.sleep(0.4)  # a slow reader, on purpose (not a synchronisation)
                got = 0
                while not h2.ended(sid):
                    for e in h2.events:
                        if isinstance(e, ev.DataReceived) and e.flow_controlled_length:
                            h2.h2.acknowledge_received_data(e.flow_controlled_length, sid)
                            got += len(e.data)
                    h2.events = [e for e in h2.events if not isinstance(e, ev.DataReceived)]
                    await h2.flush()
                    await h2.read_until(
                        lambda e: any(isinstance(x, ev.DataReceived | ev.StreamEnded) for x in e)
                    )
            finally:
                await h2.close()
            ds, cs = proxy.http_stats(), proxy.cluster_stats()
            await eventually(lambda: ds.downstream_rq_completed == 1)
    assert ds.downstream_rq_time.sum >= 350  # the 0.4 s wait (uvloop sleeps on a millisecond clock)
    assert cs.upstream_rq_time.sum < ds.downstream_rq_time.sum - 300


# ---------------------------------------------------------------------------- D6


@pytest.mark.parametrize("codec", CODECS)
async def test_high_priority_routes_use_the_high_thresholds(codec: str) -> None:
    breakers = {
        "circuit_breakers": {
            "thresholds": [
                {"priority": "DEFAULT", "max_requests": 100},
                {"priority": "HIGH", "max_requests": 1},
            ]
        }
    }
    async with gated(OK) as (up, port):
        up.gate.clear()
        routes = [route("/high", priority="HIGH"), route("/")]
        doc = bootstrap([http_listener(routes)], [cluster("backend", port, **breakers)])
        async with running_proxy(doc) as proxy, client(codec) as c:
            first = asyncio.create_task(c.get(proxy.url("/high/1")))
            await up.arrived.wait()
            second = await c.get(proxy.url("/high/2"))
            default = asyncio.create_task(c.get(proxy.url("/default")))
            await eventually(lambda: len(up.heads) == 2)
            up.gate.set()
            assert (await first).status_code == 200 and (await default).status_code == 200
    assert second.status_code == 503 and second.headers.get("x-envoy-overloaded") == "true"


@pytest.mark.parametrize("wide", ["HIGH", "DEFAULT"])
@pytest.mark.parametrize("codec", CODECS)
async def test_each_priority_has_its_own_max_connections(codec: str, wide: str) -> None:
    """The ``wide`` priority may open three connections, the other one: three slow requests of
    the wide priority reach the upstream on three connections at once, while two of the other
    priority get one connection and a place in the queue (each counts against its own)."""
    narrow = "DEFAULT" if wide == "HIGH" else "HIGH"
    limits = {wide: 3, narrow: 1}
    breakers = {
        "circuit_breakers": {"thresholds": [{"priority": p, "max_connections": n} for p, n in limits.items()]}
    }
    async with gated(OK) as (up, port):
        up.gate.clear()
        routes = [route("/high", priority="HIGH"), route("/")]
        doc = bootstrap([http_listener(routes)], [cluster("backend", port, **breakers)])
        path = {"HIGH": "/high", "DEFAULT": "/default"}
        async with running_proxy(doc) as proxy, client(codec, timeout=10) as c:
            stats = proxy.cluster_stats()
            wides = [asyncio.create_task(c.get(proxy.url(f"{path[wide]}/{i}"))) for i in range(3)]
            await eventually(lambda: len(up.heads) == 3, what=f"three {wide} requests upstream")
            assert up.connections == 3
            narrows = [asyncio.create_task(c.get(proxy.url(f"{path[narrow]}/{i}"))) for i in range(2)]
            await eventually(lambda: stats.upstream_rq_pending_active == 1, what=f"one {narrow} pending")
            assert len(up.heads) == 4 and up.connections == 4
            gauges = proxy.server.clusters.get("backend").breakers.gauges()  # type: ignore[union-attr]
            assert gauges[f"circuit_breakers.{wide.lower()}.cx_open"] == 1
            assert gauges[f"circuit_breakers.{narrow.lower()}.cx_open"] == 1
            up.gate.set()
            done = await asyncio.gather(*wides, *narrows)
            assert [r.status_code for r in done] == [200] * 5
            assert len(up.heads) == 5 and up.connections == 4  # the queued one took the freed one
            assert stats.upstream_cx_overflow >= 1 and stats.upstream_rq_pending_active == 0


# ---------------------------------------------------------------------------- one snapshot


@pytest.mark.parametrize("codec", CODECS)
async def test_a_retry_uses_the_configuration_the_request_started_with(codec: str) -> None:
    """A new cluster configuration (another endpoint) arrives while a request's first attempt
    is in flight: its retry goes where the request's own snapshot says."""
    policy = {"retry_on": "5xx", "num_retries": 1, "retry_back_off": {"base_interval": "0.001s"}}
    async with gated(UNAVAILABLE, OK) as (old, p1), gated(OK) as (new, p2):
        old.gate.clear()
        listener = http_listener([route(retry_policy=policy)])
        doc = bootstrap([listener], [cluster("backend", p1)])
        async with running_proxy(doc) as proxy:
            task = asyncio.create_task(status_of(codec, proxy.port(), "/"))
            await old.arrived.wait()
            swapped = bootstrap([listener], [cluster("backend", p2, connect_timeout="2s")])
            # The listener objects stay (as an xDS update that changes only a cluster does): the
            # connections are not drained, only the cluster behind the route changes.
            config = parse_bootstrap(json.dumps(swapped), source="swap")
            await proxy.server.apply(dataclasses.replace(config, listeners=proxy.server.config.listeners))
            old.gate.set()
            assert await task == 200
            assert len(old.heads) == 2 and new.heads == []
            assert await status_of(codec, proxy.port(), "/later") == 200  # a new request: new config
        assert len(new.heads) == 1


@pytest.mark.parametrize("codec", CODECS)
async def test_high_priority_requests_queue_within_the_high_pending_limit(codec: str) -> None:
    breakers = {
        "circuit_breakers": {
            "thresholds": [
                {"priority": "DEFAULT", "max_connections": 1, "max_pending_requests": 100},
                {"priority": "HIGH", "max_connections": 1, "max_pending_requests": 0},
            ]
        }
    }
    async with gated(OK) as (up, port):
        up.gate.clear()
        routes = [route("/high", priority="HIGH"), route("/")]
        doc = bootstrap([http_listener(routes)], [cluster("backend", port, **breakers)])
        async with running_proxy(doc) as proxy, client(codec) as c:
            first = asyncio.create_task(c.get(proxy.url("/default/1")))
            await up.arrived.wait()
            busy = asyncio.create_task(c.get(proxy.url("/high/1")))
            await eventually(lambda: len(up.heads) == 2)  # each priority's only connection is busy
            async with client(codec) as other:  # httpx stalls a third HTTP/2 stream behind two
                high = await other.get(proxy.url("/high/2"))
            queued = asyncio.create_task(c.get(proxy.url("/default/2")))
            await eventually(lambda: proxy.cluster_stats().upstream_rq_pending_active == 1)
            up.gate.set()
            done = await asyncio.gather(first, busy, queued)
            assert [r.status_code for r in done] == [200, 200, 200]
    assert high.status_code == 503 and high.headers.get("x-envoy-overloaded") == "true"
