"""Request mirroring (a route action's request_mirror_policies) over real sockets, through both
codecs: the mirror gets a copy (host with -shadow, the body, connection: close) while the
primary answers as if there were none, also when the mirror hangs or fails; a copy past the
route's buffer limit, or to a cluster without a host, is dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from .harness import Proxy, bootstrap, cluster, eventually, free_port, http_listener, route, running_proxy
from .serving import client
from .upstreams import aiohttp_upstream, raw_upstream, read_request

CODECS = ("HTTP/1.1", "HTTP/2")
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class Mirror:
    """A raw upstream recording each copy; ``mode``: "answer", "hang" (never answers) or
    "reset" (closes as soon as the copy arrived)."""

    def __init__(self, mode: str = "answer") -> None:
        self.mode = mode
        self.copies: list[tuple[bytes, bytes]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            self.copies.append(await read_request(reader))
            if self.mode == "hang":
                await asyncio.Event().wait()
            elif self.mode == "answer":
                writer.write(OK)
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def mirrored(mirror: Mirror | None, **policy: Any) -> AsyncIterator[Proxy]:
    """Route "/" to the echo upstream, mirrored to ``mirror`` (None: a port nobody listens on)."""
    async with aiohttp_upstream() as port, raw_upstream(mirror.serve if mirror else _never) as mirror_port:
        action = {"request_mirror_policies": [{"cluster": "mirror", **policy}]}
        listener = http_listener([route(**action) | {"per_request_buffer_limit_bytes": 1000}])
        mirror_cluster = cluster("mirror", mirror_port if mirror else free_port())
        async with running_proxy(bootstrap([listener], [cluster("backend", port), mirror_cluster])) as proxy:
            yield proxy


async def _never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@pytest.mark.parametrize("codec", CODECS)
async def test_the_mirror_gets_a_copy_with_its_body(codec: str) -> None:
    mirror = Mirror()
    async with mirrored(mirror) as proxy, client(codec) as c:
        response = await c.post(proxy.url("/echo?x=1"), content=b"payload", headers={"x-test": "1"})
        await eventually(lambda: len(mirror.copies) == 1, what="the copy arrived")
        stats = proxy.http_stats()
        assert (stats.rq_mirrored, stats.rq_mirror_dropped) == (1, 0)
    assert response.status_code == 200 and response.json()["body_len"] == 7
    head, body = mirror.copies[0]
    lines = head.decode().lower().split("\r\n")
    assert lines[0] == "post /echo?x=1 http/1.1"
    assert f"host: 127.0.0.1-shadow:{proxy.port()}" in lines
    assert "x-test: 1" in lines and "connection: close" in lines
    assert body == b"payload"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("mode", ["hang", "reset", "refused"])
async def test_a_slow_or_failing_mirror_never_slows_or_fails_the_primary(codec: str, mode: str) -> None:
    mirror = None if mode == "refused" else Mirror(mode)
    async with mirrored(mirror) as proxy, client(codec) as c:
        started = time.monotonic()
        codes = [(await c.get(proxy.url(f"/echo/{n}"))).status_code for n in range(3)]
        elapsed = time.monotonic() - started
        assert proxy.http_stats().rq_mirrored == 3
        if mirror is not None:
            await eventually(lambda: len(mirror.copies) == 3, what="the copies arrived")
    assert codes == [200, 200, 200]
    assert elapsed < 2.0  # a hanging mirror holds its copies for the route timeout (15 s)


async def test_copies_past_the_buffer_limit_or_the_fraction_are_not_sent() -> None:
    mirror = Mirror()
    async with (
        mirrored(mirror, runtime_fraction={"default_value": {"numerator": 100}}) as proxy,
        client("HTTP/1.1") as c,
    ):
        big = await c.post(proxy.url("/echo"), content=b"x" * 5000)  # over the route's 1000 bytes
        small = await c.post(proxy.url("/echo"), content=b"x" * 10)
        await eventually(lambda: len(mirror.copies) == 1, what="the small copy arrived")
        stats = proxy.http_stats()
        assert (stats.rq_mirrored, stats.rq_mirror_dropped) == (1, 1)
    assert big.status_code == small.status_code == 200
    assert mirror.copies[0][1] == b"x" * 10
    mirror = Mirror()
    async with (
        mirrored(mirror, runtime_fraction={"default_value": {"numerator": 0}}) as proxy,
        client("HTTP/1.1") as c,
    ):
        assert (await c.get(proxy.url("/echo"))).status_code == 200
        assert (proxy.http_stats().rq_mirrored, proxy.http_stats().rq_mirror_dropped) == (0, 0)
    assert mirror.copies == []


async def test_cluster_header_names_the_mirror_cluster_per_request() -> None:
    """Envoy's route-mirror example: the mirror cluster comes from a request header; a request
    without it, or naming no cluster, is answered and not mirrored."""
    mirror = Mirror()
    async with aiohttp_upstream() as port, raw_upstream(mirror.serve) as mirror_port:
        action = {"request_mirror_policies": [{"cluster_header": "x-mirror-cluster"}]}
        doc = bootstrap(
            [http_listener([route(**action)])], [cluster("backend", port), cluster("m", mirror_port)]
        )
        async with running_proxy(doc) as proxy, client("HTTP/1.1") as c:
            codes = [
                (await c.get(proxy.url(f"/{n}"), headers=headers)).status_code
                for n, headers in enumerate([{"x-mirror-cluster": "m"}, {}, {"x-mirror-cluster": "nope"}])
            ]
            await eventually(lambda: len(mirror.copies) == 1, what="the copy arrived")
            stats = proxy.http_stats()
            assert (stats.rq_mirrored, stats.rq_mirror_dropped) == (1, 2)
    assert codes == [200, 200, 200]
    assert mirror.copies[0][0].startswith(b"GET /0 HTTP/1.1")
