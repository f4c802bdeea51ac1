"""ORIGINAL_DST clusters, upstream_bind_config and Istio's PassthroughCluster / BlackHoleCluster,
over real sockets on loopback (no interception here: ``tests/e2e/test_original_dst.py`` has the
redirected path).

The host comes from ``x-envoy-original-dst-host`` (``use_http_header``) and is pooled per
address; a connection whose destination was not restored has no host (503 ``UH``, as Envoy:
the proxy never dials itself); the upstream sees the bound source address (127.0.0.6, the
address Istio's inbound passthrough uses); BlackHoleCluster closes TCP and answers HTTP 503,
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from . import wire
from .harness import (
    Proxy,
    bootstrap,
    eventually,
    http_listener,
    read_access_log,
    route,
    running_proxy,
    tcp_listener,
)
from .upstreams import raw_upstream, read_request

TIMEOUT = 20.0
ORIGINAL_DST = "x-envoy-original-dst-host"


def passthrough(name: str = "PassthroughCluster", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "1s",
        "original_dst_lb_config": {"use_http_header": True},
        **extra,
    }


BLACKHOLE = {"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "1s"}


@contextlib.asynccontextmanager
async def peer_reporter() -> AsyncIterator[tuple[int, list[tuple[str, int]]]]:
    """An HTTP upstream answering each request with the address it was connected from."""
    peers: list[tuple[str, int]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peers.append((peer[0], peer[1]))
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await read_request(reader)
                body = f"{peer[0]}:{peer[1]}".encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        writer.close()

    async with raw_upstream(serve) as port:
        yield port, peers


async def ask(proxy: Proxy, headers: list[tuple[str, str]], count: int = 1) -> list[wire.Response]:
    async with asyncio.timeout(TIMEOUT):
        return await wire.exchange(proxy.port(), wire.request(headers=headers) * count, count=count)


async def test_the_header_names_the_host_and_its_connections_are_pooled(tmp_path: Any) -> None:
    log = tmp_path / "access.log"
    doc = bootstrap(
        [http_listener([route(cluster="PassthroughCluster")], access_log=str(log))], [passthrough()]
    )
    async with peer_reporter() as (port, peers), running_proxy(doc) as proxy:
        for _ in range(2):  # two downstream connections, one upstream connection
            answers = await ask(proxy, [(ORIGINAL_DST, f"127.0.0.1:{port}")], count=2)
            assert [a.status for a in answers] == [200, 200]
        assert len(peers) == 1
        stats = proxy.cluster_stats("PassthroughCluster")
        assert stats.upstream_cx_total == 1 and stats.membership_total == 1
        proxy.server.access_logs.flush()
        records = read_access_log(log)
        assert {r["upstream_host"] for r in records} == {f"127.0.0.1:{port}"}
        # No original_dst filter on this listener: the local address is the socket's own.
        assert {r["downstream_local_address"] for r in records} == {f"127.0.0.1:{proxy.port()}"}


async def test_without_a_restored_destination_or_with_a_bad_header_there_is_no_host() -> None:
    doc = bootstrap([http_listener([route(cluster="PassthroughCluster")])], [passthrough()])
    async with running_proxy(doc) as proxy:
        for headers in ([], [(ORIGINAL_DST, "not-an-address")], [(ORIGINAL_DST, "::1:80")]):
            (answer,) = await ask(proxy, headers)
            assert answer.status == 503, headers
        assert proxy.cluster_stats("PassthroughCluster").upstream_cx_none_healthy == 3
        assert proxy.cluster_stats("PassthroughCluster").upstream_cx_total == 0


async def test_upstream_port_override_and_ipv6_header() -> None:
    async with peer_reporter() as (port, _):
        cluster = passthrough(
            original_dst_lb_config={"use_http_header": True, "upstream_port_override": port}
        )
        doc = bootstrap([http_listener([route(cluster="PassthroughCluster")])], [cluster])
        async with running_proxy(doc) as proxy:
            (answer,) = await ask(proxy, [(ORIGINAL_DST, "127.0.0.1:9")])  # port 9 replaced
            assert answer.status == 200
    server = await asyncio.start_server(lambda r, w: w.close(), "::1", 0)
    try:
        v6 = server.sockets[0].getsockname()[1]
        doc = bootstrap([http_listener([route(cluster="PassthroughCluster")])], [passthrough()])
        async with running_proxy(doc) as proxy:
            (answer,) = await ask(proxy, [(ORIGINAL_DST, f"[::1]:{v6}")])
            assert answer.status == 503  # reached (the server hangs up at once): an upstream reset
            host = next(iter(proxy.server.clusters.get("PassthroughCluster").original_dst.hosts))  # type: ignore[union-attr]
            assert (host.host, host.port) == ("::1", v6)
    finally:
        server.close()


async def test_bind_source_address_is_what_the_upstream_sees() -> None:
    """Istio's InboundPassthroughCluster binds 127.0.0.6 so the sidecar's own hop to the app is
    told apart by the capture rules."""
    bound = passthrough(
        "InboundPassthroughCluster",
        upstream_bind_config={"source_address": {"address": "127.0.0.6", "port_value": 0}},
    )
    doc = bootstrap([http_listener([route(cluster="InboundPassthroughCluster")])], [bound])
    async with peer_reporter() as (port, peers), running_proxy(doc) as proxy:
        (answer,) = await ask(proxy, [(ORIGINAL_DST, f"127.0.0.1:{port}")])
        assert answer.status == 200
        assert answer.body.decode().startswith("127.0.0.6:")
        assert peers[0][0] == "127.0.0.6"


async def test_tcp_proxy_to_an_unrestored_passthrough_or_the_blackhole_is_closed_and_counted() -> None:
    for target in ("PassthroughCluster", "BlackHoleCluster"):
        doc = bootstrap([tcp_listener(target)], [passthrough(), BLACKHOLE])
        async with running_proxy(doc) as proxy, wire.connect(proxy.port("tcp")) as (reader, writer):
            writer.write(b"hello")
            async with asyncio.timeout(TIMEOUT):
                assert await reader.read() == b""
            stats = proxy.server.store.tcp_stats("tcp")
            await eventually(lambda s=stats: s.downstream_cx_no_route == 1, what="the refusal counted")  # type: ignore[misc]
            assert proxy.cluster_stats(target).upstream_cx_none_healthy == 1


async def test_http_to_the_blackhole_is_a_503_uh() -> None:
    doc = bootstrap([http_listener([route(cluster="BlackHoleCluster")])], [BLACKHOLE])
    async with running_proxy(doc) as proxy:
        (answer,) = await ask(proxy, [])
        assert answer.status == 503
        assert proxy.cluster_stats("BlackHoleCluster").upstream_cx_none_healthy == 1
