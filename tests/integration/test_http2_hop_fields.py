"""Header fields across an HTTP/2 hop now that h2's outbound normalisation is off, and the
upstream pool's idle timer (one per connection).

A small h2c origin records each request's header fields as h2 decoded them (``HeaderTuple``,
which keeps HPACK's never-indexed bit); clients are httpx over HTTP/2 (prior knowledge) and
HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from h2 import events as ev
from h2.config import H2Configuration
from h2.connection import H2Connection

from .harness import bootstrap, cluster, eventually, http_listener, route, running_proxy

H2 = {"http2_protocol_options": {}}


class RecordingOrigin(asyncio.Protocol):
    """h2c origin: keeps each request's header list; answers 200 with a credential field."""

    def __init__(self, seen: list[list[Any]]) -> None:
        self.seen = seen
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, ev.RequestReceived):
                self.seen.append(list(event.headers))
                reply = [(b":status", b"200"), (b"authorization", b"Basic cmVwbHk="), (b"x-ok", b"1")]
                self.h2.send_headers(event.stream_id, reply, end_stream=True)
        self.transport.write(self.h2.data_to_send())  # type: ignore[union-attr]


@contextlib.asynccontextmanager
async def origin() -> AsyncIterator[tuple[int, list[list[Any]]]]:
    seen: list[list[Any]] = []
    server = await asyncio.get_running_loop().create_server(lambda: RecordingOrigin(seen), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()


def doc(port: int, **extra: Any) -> dict[str, Any]:
    return bootstrap([http_listener([route()])], [cluster("backend", port, **H2, **extra)])


def field(headers: list[Any], name: bytes) -> Any:
    return next(h for h in headers if h[0] == name)


# (Cookies are left out: the origin's h2 marks every cookie it receives never-indexed, so it
# cannot tell what the proxy sent.)
SECRETS = {"authorization": "Bearer abc", "proxy-authorization": "Basic eA=="}


async def test_credentials_cross_never_indexed_from_h2_and_http1_clients() -> None:
    async with origin() as (port, seen), running_proxy(doc(port)) as proxy:
        async with httpx.AsyncClient(http1=False, http2=True) as h2c:
            reply = await h2c.get(proxy.url("/a"), headers={**SECRETS, "x-app": "v"})
            assert reply.status_code == 200 and reply.headers["x-ok"] == "1"
        async with httpx.AsyncClient() as h1c:
            await h1c.get(proxy.url("/c"), headers={**SECRETS, "x-app": "v"})
        h2_req, h1_req = seen
        for headers in (h2_req, h1_req):
            for name, value in SECRETS.items():
                sent = field(headers, name.encode())
                assert sent[1] == value.encode()
                assert sent.indexable is False, f"{name} was sent indexable"
            assert field(headers, b"x-app").indexable is True


async def test_response_credentials_reach_the_client() -> None:
    async with (
        origin() as (port, _seen),
        running_proxy(doc(port)) as proxy,
        httpx.AsyncClient(http1=False, http2=True) as h2c,
    ):
        for _ in range(3):  # later HEADERS would reuse a dynamic-table entry were it indexed
            reply = await h2c.get(proxy.url("/"))
            assert reply.headers["authorization"] == "Basic cmVwbHk="
            assert reply.headers["x-ok"] == "1"


async def test_an_idle_upstream_connection_closes_once_and_a_new_one_opens() -> None:
    idle = {"common_http_protocol_options": {"idle_timeout": "0.3s"}}
    async with (
        origin() as (port, seen),
        running_proxy(doc(port, **idle)) as proxy,
        httpx.AsyncClient(http1=False, http2=True) as h2c,
    ):
        for _ in range(20):  # each request leaves the connection idle: still one timer
            assert (await h2c.get(proxy.url("/"))).status_code == 200
        stats = proxy.cluster_stats()
        assert stats.upstream_cx_http2_total == 1
        await eventually(lambda: stats.upstream_cx_idle_timeout == 1, what="idle close")
        # The new connection's only stream may end before the pool's connect callback runs.
        assert (await h2c.get(proxy.url("/"))).status_code == 200
        assert stats.upstream_cx_http2_total == 2
        await eventually(lambda: stats.upstream_cx_idle_timeout == 2, what="second idle close")
        assert len(seen) == 21
