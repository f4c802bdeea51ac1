"""The QUIC mesh link through a lossy, reordering path: a UDP relay between the two sidecars.

The relay forwards sidecar A's datagrams to sidecar B's QUIC listener and back, dropping some
and holding others back past their successors (reordering), from a seeded random source; both
directions, handshake included. (The kernel here has no ``sch_netem``; tests/e2e/test_quic_loss.py
drops in the kernel between network namespaces.) Every response must arrive whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from unit.tls.tls_fixtures import Pki

from .harness import running_proxy
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
