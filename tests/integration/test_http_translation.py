"""HTTP/1.1 ↔ HTTP/2 translation through one proxy, with real clients and servers both ways.

HTTP/2 (httpx, prior knowledge) → proxy → HTTP/1.1 cluster (aiohttp), and HTTP/1.1 (httpx)
→ proxy → HTTP/2 cluster (a small h2c server on the h2 library, below): request heads,
bodies larger than a stream window (content-length and chunked), large responses (framed and
chunked), keep-alive on the translated side, and ``use_downstream_protocol``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from h2 import events as ev
from h2.config import H2Configuration
from h2.connection import H2Connection

from .harness import bootstrap, cluster, http_listener, route, running_proxy
from .upstreams import aiohttp_upstream

H2 = {"http2_protocol_options": {}}
BIG = 3 * 1024 * 1024 + 17  # more than a stream window (1 MiB): flow control must turn over
LARGE = 8 * 1024 * 1024


class H2Server(asyncio.Protocol):
    """An h2c origin: echoes each request as JSON; ``/bytes/N`` streams N bytes within windows."""

    def __init__(self, seen: list[dict[str, Any]]) -> None:
        self.seen = seen
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.requests: dict[int, tuple[dict[bytes, bytes], hashlib._Hash, list[int]]] = {}
        self.sending: dict[int, int] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, ev.RequestReceived):
                self.requests[event.stream_id] = (dict(event.headers), hashlib.sha256(), [0])
            elif isinstance(event, ev.DataReceived):
                _, digest, size = self.requests[event.stream_id]
                digest.update(event.data)
                size[0] += len(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, ev.StreamEnded):
                self._respond(event.stream_id)
            elif isinstance(event, ev.WindowUpdated):
                self._send_pending()
            elif isinstance(event, ev.StreamReset):
                self.sending.pop(event.stream_id, None)
        self.transport.write(self.h2.data_to_send())  # type: ignore[union-attr]

    def _respond(self, sid: int) -> None:
        headers, digest, size = self.requests.pop(sid)
        path = headers[b":path"].decode()
        record = {
            "method": headers[b":method"].decode(),
            "path": path,
            "authority": headers.get(b":authority", b"").decode(),
            "headers": {k.decode(): v.decode() for k, v in headers.items() if not k.startswith(b":")},
            "body_len": size[0],
            "sha256": digest.hexdigest(),
        }
        self.seen.append(record)
        if path.startswith("/bytes/"):
            n = int(path.split("/")[2].split("?")[0])
            out = [(b":status", b"200")] + ([] if "chunked" in path else [(b"content-length", b"%d" % n)])
            self.h2.send_headers(sid, out)
            self.sending[sid] = n
            self._send_pending()
            return
        payload = json.dumps(record).encode()
        reply = [(b":status", b"200"), (b"content-type", b"application/json"), (b"x-served-by", b"h2")]
        self.h2.send_headers(sid, [*reply, (b"content-length", b"%d" % len(payload))])
        self.h2.send_data(sid, payload, end_stream=True)

    def _send_pending(self) -> None:
        for sid, left in list(self.sending.items()):
            while left:
                window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                if window <= 0:
                    break
                n = min(window, left)
                self.h2.send_data(sid, b"x" * n)
                left -= n
            if left:
                self.sending[sid] = left
            else:
                self.h2.end_stream(sid)
                del self.sending[sid]


@contextlib.asynccontextmanager
async def h2_upstream() -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: H2Server(seen), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()


def one_cluster(port: int, **extra: Any) -> dict[str, Any]:
    return bootstrap([http_listener([route()])], [cluster("backend", port, **extra)])


async def chunks(total: int, size: int = 100_000) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield bytes([sent % 251]) * n
        sent += n


def digest_of(total: int, size: int = 100_000) -> str:
    d = hashlib.sha256()
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        d.update(bytes([sent % 251]) * n)
        sent += n
    return d.hexdigest()


# ====================================================================== HTTP/2 → HTTP/1.1


async def test_h2_request_reaches_an_http1_upstream_as_a_request_line_and_host() -> None:
    async with (
        aiohttp_upstream("h1") as port,
        running_proxy(one_cluster(port)) as proxy,
        httpx.AsyncClient(http1=False, http2=True) as client,
    ):
        resp = await client.get(proxy.url("/echo/a?b=1"), headers={"te": "trailers", "x-app": "v"})
        again = await client.get(proxy.url("/echo/again"))
        assert resp.status_code == 200 and resp.http_version == "HTTP/2"
        assert resp.headers["x-served-by"] == "h1"
        body = resp.json()
        assert body["method"] == "GET" and body["path"] == "/echo/a?b=1"
        headers = dict(body["headers"])
        assert headers["host"] == f"127.0.0.1:{proxy.port()}"
        assert headers["x-app"] == "v"
        assert "te" not in headers and "x-forwarded-for" in headers
        assert again.json()["peer_port"] == body["peer_port"]  # the HTTP/1.1 connection was pooled
        assert proxy.cluster_stats().upstream_cx_total == 1


async def test_h2_request_bodies_cross_to_http1_with_content_length_or_chunked() -> None:
    async with (
        aiohttp_upstream("h1") as port,
        running_proxy(one_cluster(port)) as proxy,
        httpx.AsyncClient(http1=False, http2=True, timeout=30) as client,
    ):
        sized = await client.post(proxy.url("/upload"), content=b"".join([c async for c in chunks(BIG)]))
        streamed = await client.post(proxy.url("/upload"), content=chunks(BIG))
    for resp in (sized, streamed):
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"bytes": BIG, "sha256": digest_of(BIG)}


async def test_large_http1_responses_reach_the_h2_client_whole() -> None:
    async with (
        aiohttp_upstream("h1") as port,
        running_proxy(one_cluster(port)) as proxy,
        httpx.AsyncClient(http1=False, http2=True, timeout=30) as client,
    ):
        framed = await client.get(proxy.url(f"/bytes/{LARGE}"))
        chunked = await client.get(proxy.url(f"/bytes/{LARGE}?chunked=1"))
    assert framed.http_version == "HTTP/2" and framed.headers["content-length"] == str(LARGE)
    assert len(framed.content) == LARGE and framed.content == b"x" * LARGE
    assert "content-length" not in chunked.headers and "transfer-encoding" not in chunked.headers
    assert len(chunked.content) == LARGE


# ====================================================================== HTTP/1.1 → HTTP/2


async def test_http1_request_reaches_an_h2_upstream_as_headers() -> None:
    async with (
        h2_upstream() as (port, seen),
        running_proxy(one_cluster(port, **H2)) as proxy,
        httpx.AsyncClient() as client,
    ):
        replies = [await client.get(proxy.url(f"/echo/{i}?q=1"), headers={"x-app": "v"}) for i in range(3)]
        assert [r.http_version for r in replies] == ["HTTP/1.1"] * 3
        assert all(r.headers["x-served-by"] == "h2" for r in replies)
        assert replies[0].headers["content-length"] == str(len(replies[0].content))
        first = seen[0]
        assert first["method"] == "GET" and first["path"] == "/echo/0?q=1"
        assert first["authority"] == f"127.0.0.1:{proxy.port()}"
        assert first["headers"]["x-app"] == "v" and "host" not in first["headers"]
        assert first["headers"]["x-forwarded-for"] == "127.0.0.1"
        assert "connection" not in first["headers"]
        assert proxy.cluster_stats().upstream_cx_http2_total == 1  # one multiplexed connection
        assert proxy.listener_stats().downstream_cx_total == 1  # keep-alive kept downstream


async def test_http1_request_bodies_cross_to_h2_with_flow_control() -> None:
    async with (
        h2_upstream() as (port, seen),
        running_proxy(one_cluster(port, **H2)) as proxy,
        httpx.AsyncClient(timeout=30) as client,
    ):
        sized = await client.post(proxy.url("/up"), content=b"".join([c async for c in chunks(BIG)]))
        streamed = await client.post(proxy.url("/up"), content=chunks(BIG))
    assert sized.status_code == streamed.status_code == 200
    for record in seen:
        assert record["body_len"] == BIG and record["sha256"] == digest_of(BIG)
    assert seen[0]["headers"]["content-length"] == str(BIG)
    assert "content-length" not in seen[1]["headers"] and "transfer-encoding" not in seen[1]["headers"]


async def test_large_h2_responses_reach_the_http1_client_framed_or_chunked() -> None:
    async with (
        h2_upstream() as (port, _seen),
        running_proxy(one_cluster(port, **H2)) as proxy,
        httpx.AsyncClient(timeout=30) as client,
    ):
        framed = await client.get(proxy.url(f"/bytes/{LARGE}"))
        chunked = await client.get(proxy.url(f"/bytes/{LARGE}?chunked"))
    assert framed.headers["content-length"] == str(LARGE) and framed.content == b"x" * LARGE
    assert chunked.headers["transfer-encoding"] == "chunked" and len(chunked.content) == LARGE


async def test_http10_client_gets_a_close_delimited_body_from_h2() -> None:
    async with h2_upstream() as (port, _seen), running_proxy(one_cluster(port, **H2)) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port())
        writer.write(b"GET /bytes/100000?chunked HTTP/1.0\r\nhost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 10)  # to EOF: the body ends with the connection
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
    assert b"transfer-encoding" not in head.lower() and body == b"x" * 100000


async def test_use_downstream_protocol_keeps_http1_for_an_http1_client() -> None:
    options = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "use_downstream_protocol_config": {"http2_protocol_options": {}},
        }
    }
    doc = one_cluster(0, typed_extension_protocol_options=options)
    async with aiohttp_upstream("h1") as port:
        doc["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
            "endpoint"
        ]["address"]["socket_address"]["port_value"] = port
        async with running_proxy(doc) as proxy, httpx.AsyncClient() as client:
            resp = await client.get(proxy.url("/echo"))
            assert resp.status_code == 200 and resp.headers["x-served-by"] == "h1"
            assert proxy.cluster_stats().upstream_cx_http2_total == 0
