"""The tcp_proxy filter: opaque bytes relayed between real sockets on loopback.

Covers the echo path, a large transfer in both directions at once (checksummed), half-close
in both directions, the weighted_clusters split (seeded rng), the idle timeout, an upstream
that refuses connections, and the cluster's max_connections breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator
from typing import Any

from . import wire
from .harness import Proxy, bootstrap, cluster, eventually, free_port, running_proxy, tcp_listener
from .upstreams import raw_upstream, tcp_echo_upstream

TIMEOUT = 20.0


@contextlib.asynccontextmanager
async def tcp_proxy_to(*ports: int, **tcp: Any) -> AsyncIterator[Proxy]:
    """Listener "tcp" relaying to cluster "backend" at ``ports``."""
    doc = bootstrap([tcp_listener("backend", **tcp)], [cluster("backend", *ports)])
    async with running_proxy(doc) as proxy:
        yield proxy


def connect(
    proxy: Proxy,
) -> contextlib.AbstractAsyncContextManager[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    return wire.connect(proxy.port("tcp"))


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(TIMEOUT):
        return await reader.read()


async def test_echo() -> None:
    async with tcp_echo_upstream() as up, tcp_proxy_to(up) as proxy, connect(proxy) as (reader, writer):
        for i in range(5):
            message = b"ping %d\n" % i
            writer.write(message)
            async with asyncio.timeout(TIMEOUT):
                assert await reader.readexactly(len(message)) == message
        stats = proxy.server.store.tcp_stats("tcp")
        assert stats.downstream_cx_total == 1


async def test_twenty_mib_both_ways_at_once() -> None:
    size = 20 * 1024 * 1024
    block = random.Random(7).randbytes(1 << 16)
    sent = hashlib.sha256()
    received = hashlib.sha256()

    async def send(writer: asyncio.StreamWriter) -> None:
        for _ in range(size // len(block)):
            writer.write(block)
            sent.update(block)
            await writer.drain()
        writer.write_eof()

    async def receive(reader: asyncio.StreamReader) -> int:
        total = 0
        while data := await reader.read(1 << 16):  # bounded by the echo's EOF
            received.update(data)
            total += len(data)
        return total

    async with tcp_echo_upstream() as up, tcp_proxy_to(up) as proxy, connect(proxy) as (reader, writer):
        async with asyncio.timeout(TIMEOUT * 3):
            _, total = await asyncio.gather(send(writer), receive(reader))
    assert total == size
    assert received.hexdigest() == sent.hexdigest()
    stats = proxy.server.store.tcp_stats("tcp")
    assert (stats.downstream_cx_rx_bytes_total, stats.downstream_cx_tx_bytes_total) == (size, size)


async def test_client_half_close_still_receives_the_rest() -> None:
    """The client sends, then shuts its write side; the upstream answers after seeing the EOF."""
    async with (
        tcp_echo_upstream(farewell=b"|bye") as up,
        tcp_proxy_to(up) as proxy,
        connect(proxy) as (reader, writer),
    ):
        writer.write(b"hello")
        writer.write_eof()
        assert await read_to_eof(reader) == b"hello|bye"


async def test_upstream_half_close_still_accepts_client_bytes() -> None:
    """The upstream finishes its side first (greeting, then FIN); the client may keep sending."""
    received: list[bytes] = []

    async def greet_then_listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi")
        writer.write_eof()
        received.append(await reader.read())
        writer.close()

    async with raw_upstream(greet_then_listen) as up, tcp_proxy_to(up) as proxy, connect(proxy) as (r, w):
        assert await read_to_eof(r) == b"hi"
        w.write(b"still talking")
        w.write_eof()
        await eventually(lambda: bool(received), what="the upstream read to the client's EOF")
    assert received == [b"still talking"]


async def test_weighted_clusters_split_connections() -> None:
    connections = 120
    async with tcp_echo_upstream(greeting=b"A") as a, tcp_echo_upstream(greeting=b"B") as b:
        weighted = {"clusters": [{"name": "a", "weight": 1}, {"name": "b", "weight": 3}]}
        doc = bootstrap([tcp_listener(None, weighted_clusters=weighted)], [cluster("a", a), cluster("b", b)])
        async with running_proxy(doc, rng=random.Random(11)) as proxy:
            seen: list[bytes] = []
            for _ in range(connections):
                async with connect(proxy) as (reader, _writer), asyncio.timeout(TIMEOUT):
                    seen.append(await reader.readexactly(1))
    share_a = seen.count(b"A") / connections
    assert seen.count(b"A") + seen.count(b"B") == connections
    assert 0.1 < share_a < 0.4, f"cluster a (weight 1 of 4) got {share_a:.0%} of the connections"


async def test_idle_timeout_closes_a_quiet_session() -> None:
    async with tcp_echo_upstream() as up, tcp_proxy_to(up, idle_timeout="0.3s") as proxy:
        async with connect(proxy) as (reader, writer):
            writer.write(b"x")
            async with asyncio.timeout(TIMEOUT):
                assert await reader.readexactly(1) == b"x"
            loop = asyncio.get_running_loop()
            quiet_since = loop.time()
            assert await read_to_eof(reader) == b""
            assert loop.time() - quiet_since >= 0.3
        assert proxy.server.store.tcp_stats("tcp").idle_timeout == 1


async def test_upstream_refusing_closes_the_client() -> None:
    async with tcp_proxy_to(free_port()) as proxy, connect(proxy) as (reader, writer):
        writer.write(b"anyone?")
        try:
            data = await read_to_eof(reader)
        except ConnectionResetError:
            data = b""
        assert data == b""
        assert proxy.cluster_stats("backend").upstream_cx_connect_fail == 1


async def test_max_connect_attempts_tries_another_host_after_a_refusal() -> None:
    """Round robin over a refusing endpoint and an echo: with two attempts every session reaches
    the echo (a refused first connect is tried again on a host picked afresh); the picks
    alternate, so three or four of the sessions' first connects were refused."""
    async with tcp_echo_upstream() as up, tcp_proxy_to(free_port(), up, max_connect_attempts=2) as proxy:
        for i in range(4):
            async with connect(proxy) as (reader, writer):
                writer.write(b"hello %d" % i)
                async with asyncio.timeout(TIMEOUT):
                    assert await reader.readexactly(7) == b"hello %d" % i
        assert proxy.cluster_stats("backend").upstream_cx_connect_fail in (3, 4)


async def test_max_connections_closes_sessions_past_the_breaker() -> None:
    # Envoy's tcp_proxy checks the cluster's max_connections before connecting upstream: a
    # session past it is closed at once (UO, upstream_cx_overflow) and the others keep working.
    async with tcp_echo_upstream() as up:
        breakers = {"thresholds": [{"max_connections": 2}]}
        doc = bootstrap([tcp_listener("backend")], [cluster("backend", up, circuit_breakers=breakers)])
        async with running_proxy(doc) as proxy:
            async with connect(proxy) as (r1, w1), connect(proxy) as (r2, w2):
                for reader, writer in ((r1, w1), (r2, w2)):
                    writer.write(b"held")
                    async with asyncio.timeout(TIMEOUT):
                        assert await reader.readexactly(4) == b"held"
                async with connect(proxy) as (r3, w3):
                    w3.write(b"third")
                    try:
                        assert await read_to_eof(r3) == b""
                    except ConnectionResetError:
                        pass
                w1.write(b"still")
                async with asyncio.timeout(TIMEOUT):
                    assert await r1.readexactly(5) == b"still"
            stats = proxy.cluster_stats("backend")
            assert stats.upstream_cx_overflow == 1
            assert stats.upstream_cx_total == 2
