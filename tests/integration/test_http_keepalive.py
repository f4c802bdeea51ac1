"""Keep-alive on both sides of the proxy.

Covers downstream connection reuse and the downstream idle timeout; the upstream pool: reuse
across requests (seen by the upstream as one peer port), the bound on idle connections per
endpoint, the cluster idle timeout, and that a pooled connection the upstream closed (or
announced it would close) is never handed to a request.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from . import wire
from .harness import eventually, proxy_to, run_process
from .upstreams import Handler, aiohttp_upstream, raw_responder, raw_upstream, read_request


async def test_many_requests_reuse_one_connection_on_each_side() -> None:
    async with aiohttp_upstream() as up, proxy_to(up) as proxy:
        peers: set[int] = set()
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1)) as client:
            for i in range(60):
                resp = await client.get(proxy.url(f"/echo/{i}"))
                assert resp.status_code == 200
                assert resp.json()["path"] == f"/echo/{i}"
                peers.add(resp.json()["peer_port"])
        assert len(peers) == 1, f"upstream saw {len(peers)} connections for 60 sequential requests"
        assert proxy.cluster_stats().upstream_cx_total == 1
        assert proxy.cluster_stats().upstream_rq_total == 60
        assert proxy.listener_stats().downstream_cx_total == 1
        assert proxy.http_stats().downstream_rq_total == 60


def _gate(expected: int) -> Handler:
    """Answers nobody until ``expected`` requests are in: they must all hold a connection."""
    arrived = 0
    all_in = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal arrived
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await read_request(reader)
            arrived += 1
            if arrived == expected:
                all_in.set()
            async with asyncio.timeout(10):
                await all_in.wait()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            for _ in range(100):  # later requests on this pooled connection: answered at once
                await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    return handler


async def test_max_connections_bounds_the_pool_and_queues_the_rest() -> None:
    # 72 requests at once against circuit_breakers max_connections 64: 64 connections open,
    # the other 8 requests wait as pending and take connections as the first responses end.
    concurrent, bound = 72, 64
    breakers = {"circuit_breakers": {"thresholds": [{"max_connections": bound}]}}
    async with raw_upstream(_gate(bound)) as up, proxy_to(up, cluster_extra=breakers) as proxy:
        limits = httpx.Limits(max_connections=concurrent, max_keepalive_connections=concurrent)
        async with httpx.AsyncClient(limits=limits, timeout=20) as client:
            responses = await asyncio.gather(*(client.get(proxy.url(f"/{i}")) for i in range(concurrent)))
        assert [r.status_code for r in responses] == [200] * concurrent
        stats = proxy.cluster_stats()
        assert stats.upstream_cx_total == bound
        # Requests that arrive after the first responses find an idle connection instead.
        assert 1 <= stats.upstream_rq_pending_total <= concurrent - bound
        assert stats.upstream_rq_pending_active == 0 and stats.upstream_cx_active == bound


async def test_cluster_idle_timeout_closes_pooled_connections() -> None:
    options = {"common_http_protocol_options": {"idle_timeout": "0.3s"}}
    async with aiohttp_upstream() as up, proxy_to(up, cluster_extra=options) as proxy:
        stats = proxy.cluster_stats()
        async with httpx.AsyncClient() as client:
            first = await client.get(proxy.url("/echo"))
            assert stats.upstream_cx_active == 1
            await eventually(
                lambda: stats.upstream_cx_idle_timeout == 1 and stats.upstream_cx_active == 0,
                what="pooled connection closed by the idle timeout",
            )
            second = await client.get(proxy.url("/echo"))
        assert second.status_code == 200
        assert second.json()["peer_port"] != first.json()["peer_port"]
        assert stats.upstream_cx_total == 2


async def test_downstream_idle_timeout_closes_keepalive_connection() -> None:
    idle = {"common_http_protocol_options": {"idle_timeout": "0.3s"}}
    async with aiohttp_upstream() as up, proxy_to(up, **idle) as proxy:
        async with wire.connect(proxy.port()) as (reader, writer):
            writer.write(wire.request("GET", "/echo"))
            assert (await wire.read_response(reader)).status == 200
            assert await wire.read_eof(reader) == b"", "the idle connection closed without a byte"
        await eventually(lambda: proxy.listener_stats().downstream_cx_active == 0)


# A keep-alive response (no Connection: close), then the upstream closes anyway.
_answer_once_then_close = raw_responder(
    lambda *_: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", close=True
)


async def test_pooled_connection_closed_by_upstream_is_never_reused() -> None:
    # POST bodies make a stale hand-out visible: a request whose body was already written
    # to a dead connection cannot be retried, so it would fail with a 503.
    requests = 40
    async with raw_upstream(_answer_once_then_close) as up, proxy_to(up) as proxy:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1)) as client:
            for i in range(requests):
                resp = await (client.get(proxy.url()) if i % 2 else client.post(proxy.url(), content=b"body"))
                assert (resp.status_code, resp.text) == (200, "ok"), f"request {i}"
        assert proxy.cluster_stats().upstream_cx_total == requests
        assert proxy.listener_stats().downstream_cx_total == 1


async def _answer_with_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
    await writer.drain()
    # Keep the socket open: only the header says the upstream is done; the proxy closes it.
    await reader.read()
    writer.close()


async def test_upstream_connection_close_header_prevents_pooling() -> None:
    async with raw_upstream(_answer_with_close) as up, proxy_to(up) as proxy:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1)) as client:
            for i in range(10):
                resp = await client.get(proxy.url(f"/{i}"))
                assert (resp.status_code, resp.text) == (200, "ok")
                # The downstream connection stays keep-alive: upstream framing is per hop.
                assert "close" not in resp.headers.get("connection", "")
        assert proxy.cluster_stats().upstream_cx_total == 10
        assert proxy.listener_stats().downstream_cx_total == 1


async def test_curl_reuses_its_connection_through_the_proxy() -> None:
    urls = 5
    async with aiohttp_upstream() as up, proxy_to(up) as proxy:
        code, out, err = await run_process(
            "curl", "-sS", "-v", "--http1.1", *(proxy.url(f"/echo/{i}") for i in range(urls))
        )  # fmt: skip
        assert code == 0, err.decode()
        assert err.count(b"Re-using existing connection") + err.count(b"Reusing existing") == urls - 1
        assert proxy.listener_stats().downstream_cx_total == 1
        assert proxy.cluster_stats().upstream_cx_total == 1
    assert out.count(b'"server":"up"') + out.count(b'"server": "up"') == urls
