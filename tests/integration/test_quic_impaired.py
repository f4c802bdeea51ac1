"""The QUIC mesh link through an impaired path: UDP relays between the two sidecars.

The relay forwards sidecar A's datagrams to sidecar B's QUIC listener and back, dropping some
and holding others back past their successors (reordering), from a seeded random source; both
directions, handshake included. (The kernel here has no ``sch_netem``; tests/e2e/test_quic_loss.py
drops in the kernel between network namespaces.) Every response must arrive whole. Another relay
moves its server-facing side to a new port mid-connection, as a NAT rebinding does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from unit.tls.tls_fixtures import Pki

from .harness import FILE_LOG, read_access_log, running_proxy
from .test_quic_mesh import inbound, outbound
from .upstreams import aiohttp_upstream

pytestmark = pytest.mark.timeout(60)
LOSS, REORDER = 0.03, 0.2


class Impairment(asyncio.DatagramProtocol):
    """Relay between one client and ``server``: drops ``LOSS``, delays ``REORDER`` by 5-15 ms."""

    def __init__(self, server: tuple[str, int], rng: random.Random) -> None:
        self.server = server
        self.rng = rng
        self.client: Any = None
        self.transport: asyncio.DatagramTransport | None = None
        self.counts = {"forwarded": 0, "dropped": 0, "reordered": 0}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr != self.server:
            self.client = addr
        to = self.server if addr != self.server else self.client
        roll = self.rng.random()
        if roll < LOSS:
            self.counts["dropped"] += 1
        elif roll < LOSS + REORDER:
            self.counts["reordered"] += 1
            asyncio.get_running_loop().call_later(self.rng.uniform(0.005, 0.015), self._send, data, to)
        else:
            self._send(data, to)

    def _send(self, data: bytes, to: Any) -> None:
        assert self.transport is not None
        self.counts["forwarded"] += 1
        self.transport.sendto(data, to)


@contextlib.asynccontextmanager
async def relay(server_port: int) -> AsyncIterator[tuple[int, Impairment]]:
    protocol = Impairment(("127.0.0.1", server_port), random.Random(17))
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: protocol, local_addr=("127.0.0.1", 0)
    )
    try:
        yield transport.get_extra_info("sockname")[1], protocol
    finally:
        transport.close()


async def test_a_lossy_reordering_path_loses_no_request() -> None:
    pki = Pki()
    async with (
        aiohttp_upstream("app") as app,
        running_proxy(inbound(pki, app, 9)) as b,
        relay(b.port("inbound")) as (port, impairment),
        running_proxy(outbound(pki, port)) as a,
        httpx.AsyncClient(timeout=20) as client,
    ):
        responses = await asyncio.gather(*(client.get(a.url("/bytes/150000", "outbound")) for _ in range(8)))
        assert [r.status_code for r in responses] == [200] * 8
        assert {hashlib.sha256(r.content).hexdigest() for r in responses} == {
            hashlib.sha256(b"x" * 150_000).hexdigest()
        }
        assert a.cluster_stats("b").upstream_cx_http3_total == 1
    assert impairment.counts["dropped"] > 0 and impairment.counts["reordered"] > 0


class Rebinding(asyncio.DatagramProtocol):
    """Relay whose side facing the server moves to a new UDP port on ``rebind()`` (a NAT rebinding)."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.client: Any = None
        self.front: asyncio.DatagramTransport | None = None
        self.backs: list[asyncio.DatagramTransport] = []
        self.current = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.front = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client = addr
        self.backs[self.current].sendto(data, self.server)

    def rebind(self) -> None:
        self.current += 1


class _Back(asyncio.DatagramProtocol):
    def __init__(self, relay: Rebinding) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.relay.front is not None
        self.relay.front.sendto(data, self.relay.client)


async def test_the_server_follows_a_client_whose_address_changes(tmp_path: Path) -> None:
    """Migration on: after the rebinding, B validates the new path and the same connection goes on."""
    pki = Pki()
    loop = asyncio.get_running_loop()
    async with (
        aiohttp_upstream("app") as app,
        contextlib.AsyncExitStack() as stack,
    ):
        doc = inbound(pki, app, 9)
        log = str(tmp_path / "b.log")
        manager = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        manager["access_log"] = [{"name": "file", "typed_config": {"@type": FILE_LOG, "path": log}}]
        b = await stack.enter_async_context(running_proxy(doc))
        relay = Rebinding(("127.0.0.1", b.port("inbound")))
        front, _ = await loop.create_datagram_endpoint(lambda: relay, local_addr=("127.0.0.1", 0))
        stack.callback(front.close)
        for _ in range(2):
            back, _ = await loop.create_datagram_endpoint(lambda: _Back(relay), local_addr=("127.0.0.1", 0))
            stack.callback(back.close)
            relay.backs.append(back)
        a = await stack.enter_async_context(running_proxy(outbound(pki, front.get_extra_info("sockname")[1])))
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=10))
        before = await client.get(a.url("/before", "outbound"))
        relay.rebind()
        after = [await client.get(a.url(f"/after{i}", "outbound")) for i in range(3)]
        assert [r.status_code for r in (before, *after)] == [200] * 4
        assert a.cluster_stats("b").upstream_cx_http3_total == 1  # the same connection throughout
        assert b.listener_stats("inbound").ssl_handshake == 1
        ports = [back.get_extra_info("sockname")[1] for back in relay.backs]
        await stack.aclose()
    seen = {r["path"]: r["downstream_remote_address"] for r in read_access_log(log)}
    assert seen["/before"] == f"127.0.0.1:{ports[0]}"
    assert seen["/after2"] == f"127.0.0.1:{ports[1]}"
