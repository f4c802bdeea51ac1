"""The connection_limit network filter: a filter chain's connections capped, on real sockets.

Covers an HTTP/1.1 chain (keep-alive connections held; one over the limit closed unanswered and
counted; a place freed by a close is taken by the next connection), connections that never
send a request (their codec choice abandoned), the refusal ``delay``, a TLS chain whose
handshakes fail after selection, and a tcp_proxy chain;
each time the active count returns to 0 once the clients are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from . import wire
from .harness import (
    Proxy,
    bootstrap,
    cluster,
    eventually,
    free_port,
    http_listener,
    running_proxy,
    tcp_listener,
)
from .test_exhaustion import client_hello, tls_listener
from .upstreams import tcp_echo_upstream

CONNECTION_LIMIT = "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit"
LIMIT = 3
DIRECT = [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]


def limited(listener: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``listener`` with a connection_limit (stat prefix "cl", max 3) before its terminal filter."""
    config = {"@type": CONNECTION_LIMIT, "stat_prefix": "cl", "max_connections": LIMIT} | fields
    filters = listener["filter_chains"][0]["filters"]
    filters.insert(0, {"name": "envoy.filters.network.connection_limit", "typed_config": config})
    return listener


def stats(proxy: Proxy) -> Any:
    return proxy.server.store.connection_limit_stats("cl")


@contextlib.asynccontextmanager
async def http_proxy(**fields: Any) -> Any:
    async with running_proxy(bootstrap([limited(http_listener(DIRECT), **fields)], [])) as proxy:
        yield proxy


async def served(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(wire.request())
    resp = await wire.read_response(reader)
    assert (resp.status, resp.body) == (200, b"ok")


async def refused(port: int) -> None:
    """A connection over the limit: closed without a byte of response."""
    async with wire.connect(port) as (reader, writer):
        writer.write(wire.request())
        assert await wire.read_eof(reader) == b""


async def test_http_connections_over_the_limit_are_closed_unanswered() -> None:
    async with http_proxy() as proxy, contextlib.AsyncExitStack() as held:
        port = proxy.port()
        conns = [await held.enter_async_context(wire.connect(port)) for _ in range(LIMIT)]
        for reader, writer in conns:
            await served(reader, writer)  # each stays open, idle, keep-alive
        assert stats(proxy).active_connections == LIMIT
        await refused(port)
        assert stats(proxy).limited_connections == 1
        for reader, writer in conns:  # the held ones are still served
            await served(reader, writer)
        conns[0][1].close()
        await eventually(lambda: stats(proxy).active_connections == LIMIT - 1, what="a place freed")
        async with wire.connect(port) as (reader, writer):
            await served(reader, writer)
        await held.aclose()
        await eventually(lambda: stats(proxy).active_connections == 0, what="count back to 0")
        assert stats(proxy).limited_connections == 1


async def test_connections_that_never_send_a_request_hold_and_release_their_place() -> None:
    async with http_proxy() as proxy:
        port = proxy.port()
        async with contextlib.AsyncExitStack() as held:
            for _ in range(LIMIT):
                await held.enter_async_context(wire.connect(port))
            await eventually(lambda: stats(proxy).active_connections == LIMIT, what="all admitted")
            await refused(port)
        await eventually(lambda: stats(proxy).active_connections == 0, what="count back to 0")
        async with wire.connect(port) as (reader, writer):
            await served(reader, writer)


async def test_a_refused_connection_is_closed_after_the_delay() -> None:
    delay = 0.3
    async with http_proxy(delay=f"{delay}s") as proxy, contextlib.AsyncExitStack() as held:
        port = proxy.port()
        for _ in range(LIMIT):
            await served(*await held.enter_async_context(wire.connect(port)))
        loop = asyncio.get_running_loop()
        start = loop.time()
        await refused(port)
        assert loop.time() - start >= delay * 0.9
        assert stats(proxy).limited_connections == 1
        assert stats(proxy).active_connections == LIMIT


async def test_tcp_proxy_chain() -> None:
    async with tcp_echo_upstream() as up:
        doc = bootstrap([limited(tcp_listener("backend"))], [cluster("backend", up)])
        async with running_proxy(doc) as proxy, contextlib.AsyncExitStack() as held:
            port = proxy.port("tcp")

            async def echoed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writer.write(b"ping\n")
                async with asyncio.timeout(10):
                    assert await reader.readexactly(5) == b"ping\n"

            conns = [await held.enter_async_context(wire.connect(port)) for _ in range(LIMIT)]
            for conn in conns:
                await echoed(*conn)
            assert stats(proxy).active_connections == LIMIT
            await refused(port)
            assert stats(proxy).limited_connections == 1
            assert proxy.server.store.tcp_stats("tcp").downstream_cx_total == LIMIT
            conns[0][1].close()
            await eventually(lambda: stats(proxy).active_connections == LIMIT - 1, what="a place freed")
            async with wire.connect(port) as conn:
                await echoed(*conn)
            await held.aclose()
            await eventually(lambda: stats(proxy).active_connections == 0, what="count back to 0")


async def test_tls_chain_places_come_back_when_handshakes_fail() -> None:
    listener = limited(tls_listener("tls", "10s"))
    async with running_proxy(bootstrap([listener], [cluster("backend", free_port())])) as proxy:
        port = proxy.port("tls")
        hello = client_hello()
        async with contextlib.AsyncExitStack() as held:
            for _ in range(LIMIT):  # handshakes begun, never finished
                _, writer = await held.enter_async_context(wire.connect(port))
                writer.write(hello)
            await eventually(lambda: stats(proxy).active_connections == LIMIT, what="all admitted")
            await refused(port)
            assert stats(proxy).limited_connections == 1
        await eventually(lambda: stats(proxy).active_connections == 0, what="abandoned handshakes released")
        async with wire.connect(port) as (reader, writer):  # not TLS: the handshake fails
            writer.write(wire.request())
            await wire.read_eof(reader)
        await eventually(lambda: stats(proxy).active_connections == 0, what="failed handshake released")
        assert stats(proxy).limited_connections == 1
        listener_stats = proxy.listener_stats("tls")
        assert listener_stats.ssl_connection_error >= LIMIT + 1
        assert listener_stats.downstream_pre_cx_active == 0
