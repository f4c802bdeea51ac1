"""Message framing corner cases (RFC 9112 §6), read byte-exact from raw sockets.

Covers HEAD (no body relayed, content-length kept), 204 and 304 (no body, the connection
stays usable), HTTP/1.0 clients (content-length or close-delimited responses, the connection
closing unless keep-alive was asked for), pipelined requests answered in order, and an
upstream's interim ``103 Early Hints`` before its final response.
"""

from __future__ import annotations

import json

import httpx

from . import wire
from .harness import proxy_to, run_process
from .upstreams import aiohttp_upstream, raw_responder, raw_upstream


async def test_head_relays_no_body_and_keeps_content_length() -> None:
    async with (
        aiohttp_upstream() as up,
        proxy_to(up) as proxy,
        wire.connect(proxy.port()) as (reader, writer),
    ):
        for target in ("/bytes/1000", "/bytes/1000?chunked", "/echo"):
            writer.write(wire.request("HEAD", target))
            head = await wire.read_response(reader, method="HEAD")
            assert head.status == 200
            if target == "/bytes/1000":
                assert head.get("content-length") == "1000"
            # Any body bytes relayed after a HEAD response would corrupt the next response.
            writer.write(wire.request("GET", f"/echo/after{target}"))
            after = await wire.read_response(reader)
            assert json.loads(after.body)["path"] == f"/echo/after{target}"


def _no_body_responses(head: bytes, _: bytes) -> bytes:
    if b" /204 " in head:
        return b"HTTP/1.1 204 No Content\r\nx-kind: 204\r\n\r\n"
    if b" /304 " in head:
        return b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 50\r\n\r\n'
    return b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"


async def test_204_and_304_have_no_body_and_keep_the_connection() -> None:
    async with (
        raw_upstream(raw_responder(_no_body_responses)) as up,
        proxy_to(up) as proxy,
        wire.connect(proxy.port()) as (reader, writer),
    ):
        for target in ("/204", "/304", "/204", "/final"):
            writer.write(wire.request("GET", target))
            resp = await wire.read_response(reader)
            assert resp.get("transfer-encoding") is None, f"{target}: a body framing was invented"
            if target == "/304":
                assert (resp.status, resp.get("etag"), resp.get("content-length")) == (304, '"v1"', "50")
            elif target == "/204":
                assert (resp.status, resp.get("x-kind")) == (204, "204")
        assert (resp.status, resp.body) == (200, b"done")
        assert proxy.cluster_stats().upstream_cx_total == 1


async def _http10(port: int, target: str, headers: list[tuple[str, str]] | None = None) -> wire.Response:
    async with wire.connect(port) as (reader, writer):
        writer.write(wire.request("GET", target, headers, version="HTTP/1.0"))
        resp = await wire.read_response(reader)
        assert await wire.read_eof(reader) == b"", "the proxy must close an HTTP/1.0 connection"
    return resp


async def test_http10_client_gets_length_or_close_delimited_body() -> None:
    async with aiohttp_upstream() as up, proxy_to(up) as proxy:
        sized = await _http10(proxy.port(), "/bytes/100")
        streamed = await _http10(proxy.port(), "/bytes/100?chunked")
    assert (sized.status, sized.get("content-length"), sized.body) == (200, "100", b"x" * 100)
    # An HTTP/1.0 client cannot read chunked: the body ends when the connection does.
    assert streamed.get("transfer-encoding") is None
    assert streamed.get("content-length") is None
    assert (streamed.status, streamed.body) == (200, b"x" * 100)


async def test_http10_keep_alive_when_asked() -> None:
    async with (
        aiohttp_upstream() as up,
        proxy_to(up) as proxy,
        wire.connect(proxy.port()) as (reader, writer),
    ):
        for i in range(3):
            writer.write(
                wire.request("GET", f"/echo/{i}", [("Connection", "keep-alive")], version="HTTP/1.0")
            )
            resp = await wire.read_response(reader)
            assert resp.get("connection") == "keep-alive"
            assert json.loads(resp.body)["path"] == f"/echo/{i}"
        assert proxy.listener_stats().downstream_cx_total == 1


async def test_http10_without_host_is_routed() -> None:
    async with (
        aiohttp_upstream() as up,
        proxy_to(up) as proxy,
        wire.connect(proxy.port()) as (reader, writer),
    ):
        writer.write(wire.request("GET", "/echo/nohost", version="HTTP/1.0", host=None))
        resp = await wire.read_response(reader)
    assert (resp.status, json.loads(resp.body)["path"]) == (200, "/echo/nohost")


async def test_pipelined_requests_answered_in_order() -> None:
    pipeline = b"".join(
        [
            wire.request("GET", "/delay/0.3"),  # the slow one first: the others must wait for it
            wire.request("POST", "/echo/2", body=b"two"),
            wire.request("GET", "/echo/3"),
        ]
    )
    async with aiohttp_upstream() as up, proxy_to(up) as proxy:
        slow, second, third = await wire.exchange(proxy.port(), pipeline, count=3)
        assert proxy.listener_stats().downstream_cx_total == 1
    assert (slow.status, slow.body) == (200, b"late\n")
    assert (json.loads(second.body)["path"], json.loads(second.body)["body_len"]) == ("/echo/2", 3)
    assert json.loads(third.body)["path"] == "/echo/3"


async def test_two_requests_in_one_write() -> None:
    async with aiohttp_upstream() as up, proxy_to(up) as proxy:
        first, second = await wire.exchange(
            proxy.port(), wire.request("GET", "/echo/a") + wire.request("GET", "/echo/b"), count=2
        )
    assert [json.loads(r.body)["path"] for r in (first, second)] == ["/echo/a", "/echo/b"]


def _early_hints(_: bytes, __: bytes) -> bytes:
    return (
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-final: yes\r\n\r\nok"
    )


async def test_interim_103_before_final_response() -> None:
    async with raw_upstream(raw_responder(_early_hints)) as up, proxy_to(up) as proxy:
        async with wire.connect(proxy.port()) as (reader, writer):
            writer.write(wire.request("GET", "/hints"))
            first = await wire.read_head(reader)
            if first.status == 103:  # relaying the interim response is allowed; it must be well formed
                first = await wire.read_head(reader)
            assert (first.status, first.get("x-final")) == (200, "yes")
            assert first.get("link") is None, "the interim response's headers leaked into the final one"
            assert await reader.readexactly(2) == b"ok"
        async with httpx.AsyncClient() as client:
            resp = await client.get(proxy.url("/hints"))
        assert (resp.status_code, resp.text) == (200, "ok")


def _close_delimited(_: bytes, __: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nx-framing: none\r\nConnection: close\r\n\r\n" + b"z" * 70000


async def test_close_delimited_upstream_response_is_rechunked_for_http11_client() -> None:
    # The upstream ends its body by closing; the client's connection must survive that.
    async with (
        raw_upstream(raw_responder(_close_delimited, close=True)) as up,
        proxy_to(up) as proxy,
        wire.connect(proxy.port()) as (reader, writer),
    ):
        for _ in range(2):
            writer.write(wire.request("GET", "/"))
            resp = await wire.read_response(reader)
            assert resp.get("transfer-encoding") == "chunked"
            assert (resp.status, resp.body) == (200, b"z" * 70000)
        assert proxy.listener_stats().downstream_cx_total == 1


async def test_client_connection_close_is_honoured() -> None:
    async with (
        aiohttp_upstream() as up,
        proxy_to(up) as proxy,
        wire.connect(proxy.port()) as (reader, writer),
    ):
        writer.write(wire.request("GET", "/bytes/10", [("Connection", "close")]))
        resp = await wire.read_response(reader)
        assert (resp.status, resp.get("connection"), resp.body) == (200, "close", b"x" * 10)
        assert await wire.read_eof(reader) == b""


async def test_absolute_form_target_from_curl_as_proxy_client() -> None:
    # RFC 9112 §3.2.2: a server MUST accept the absolute-form; curl -x sends it.
    async with aiohttp_upstream() as up, proxy_to(up) as proxy:
        code, out, err = await run_process(
            "curl", "-sS", "--fail", "--max-time", "10", "-x", f"127.0.0.1:{proxy.port()}",
            "http://svc.local/echo/abs?q=1",
        )  # fmt: skip
    assert code == 0, err.decode()
    body = json.loads(out)
    assert body["path"] == "/echo/abs?q=1"
    assert dict(body["headers"])["host"] == "svc.local"


async def test_pipelined_request_waits_behind_a_large_streamed_response() -> None:
    size = 4 * 1024 * 1024
    pipeline = wire.request("GET", f"/bytes/{size}?chunked") + wire.request("GET", "/echo/second")
    async with aiohttp_upstream() as up, proxy_to(up) as proxy:
        big, second = await wire.exchange(proxy.port(), pipeline, count=2)
    assert big.body == b"x" * size
    assert json.loads(second.body)["path"] == "/echo/second"
