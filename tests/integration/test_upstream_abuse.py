"""An HTTP/1.1 upstream that breaks the protocol is contained (issue 12, findings 11, 14, 15).

Each upstream here is a raw socket server that misbehaves on purpose: an unsolicited
``101``, a status outside 100-599, bytes after a complete response, a header line or a
trailer block without end, a flood of interim responses, a reset after reading a request.
The contract: the client gets ``502`` (or, once its response began, a cut connection), the
upstream connection is closed and never reused, a victim sharing the pool is served its own
answer, and no request is delivered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable

import pytest

from . import wire
from .harness import Proxy, bootstrap, cluster, http_listener, proxy_to, route, running_proxy
from .test_bad_input import open_raw, read_until_close
from .upstreams import Handler, raw_upstream, read_request

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def answer_target(head: bytes) -> bytes:
    """The well-behaved answer: the request target as the body."""
    target = head.split(b" ", 2)[1]
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(target), target)


def first_then_good(first: Callable[[bytes], bytes], seen: list[bytes]) -> Handler:
    """The first request the upstream receives is answered with ``first(head)``, all later
    ones (on that connection or another) well; ``seen`` gets each request line."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            for _ in range(1000):
                head, _ = await read_request(reader)
                seen.append(head.split(b"\r\n", 1)[0])
                writer.write(first(head) if len(seen) == 1 else answer_target(head))
                await writer.drain()
        writer.close()

    return handler


@contextlib.asynccontextmanager
async def shared_pool(handler: Handler, **cluster_extra: object) -> AsyncIterator[Proxy]:
    """One upstream connection at most: an attacker's upstream exchange and a victim's share it."""
    breakers = {"circuit_breakers": {"thresholds": [{"max_connections": 1}]}}
    async with raw_upstream(handler) as port:
        doc = bootstrap([http_listener([route()])], [cluster("backend", port, **breakers, **cluster_extra)])
        async with running_proxy(doc) as proxy:
            yield proxy


async def get(proxy: Proxy, target: str) -> wire.Response:
    [response] = await asyncio.wait_for(wire.exchange(proxy.port(), wire.request("GET", target)), 10)
    return response


# ------------------------------------------------------------------ finding 15


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\nRAW", id="101"
        ),
        pytest.param(b"HTTP/1.1 999 Whatever\r\ncontent-length: 2\r\n\r\nok", id="999"),
        pytest.param(b"HTTP/1.1 600 Beyond\r\ncontent-length: 2\r\n\r\nok", id="600"),
        # Found by the fuzzer: a NUL in the reason phrase (RFC 9112 §4 allows HTAB, SP, VCHAR).
        pytest.param(b"HTTP/1.1 200 O\x00K\r\ncontent-length: 2\r\n\r\nok", id="nul-in-reason"),
    ],
)
async def test_unsolicited_101_or_bad_status_is_502_and_the_connection_is_dropped(bad: bytes) -> None:
    seen: list[bytes] = []
    async with shared_pool(first_then_good(lambda _: bad, seen)) as proxy:
        first = await get(proxy, "/attacker")
        assert first.status == 502
        assert b"upstream protocol error" in first.body
        assert b"RAW" not in first.body
        victim = await get(proxy, "/victim")
        assert (victim.status, victim.body) == (200, b"/victim")
        stats = proxy.cluster_stats()
        assert stats.upstream_cx_protocol_error == 1
        assert stats.upstream_cx_total == 2  # the bad connection was never reused
    assert seen == [b"GET /attacker HTTP/1.1", b"GET /victim HTTP/1.1"]


async def test_unsolicited_101_never_turns_the_client_connection_into_a_tunnel() -> None:
    upgrade = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n"
    seen: list[bytes] = []
    async with shared_pool(first_then_good(lambda _: upgrade, seen)) as proxy:
        sock = await open_raw(proxy.port())
        try:
            # The second request would travel through the tunnel, unseen, if one were opened.
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(sock, wire.request("GET", "/one") + wire.request("GET", "/two"))
            received, _ = await read_until_close(sock, quiet=3)
        finally:
            sock.close()
    responses = received.split(b"HTTP/1.1 ")[1:]
    assert responses[0].startswith(b"502 "), received[:200]
    assert all(not r.startswith(b"101") for r in responses)
    # Whatever reached the upstream after the 502 came as a request the proxy accounted for.
    assert seen[0] == b"GET /one HTTP/1.1"
    assert all(line.startswith(b"GET /") for line in seen)


async def test_interim_responses_are_dropped_and_the_final_one_relayed() -> None:
    interim = b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
    odd = b"HTTP/1.1 199 Odd\r\nx-odd: 1\r\n\r\n"
    async with shared_pool(first_then_good(lambda _: interim + odd + OK, [])) as proxy:
        response = await get(proxy, "/x")
        assert (response.status, response.body) == (200, b"ok")
        assert response.get("x-odd") is None and response.get("link") is None
        assert (await get(proxy, "/next")).body == b"/next"
        assert proxy.cluster_stats().upstream_cx_total == 1


async def test_a_flood_of_interim_responses_is_bounded_like_one_head() -> None:
    flood = b"HTTP/1.1 100 Continue\r\n\r\n" * 5000  # 125 KB of heads, over the 60 KiB default
    async with shared_pool(first_then_good(lambda _: flood + OK, [])) as proxy:
        response = await get(proxy, "/flood")
        assert response.status == 502
        assert (await get(proxy, "/victim")).body == b"/victim"
        assert proxy.cluster_stats().upstream_cx_protocol_error == 1


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nEVIL!!", id="a-whole-response"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\nEVI", id="half-a-response"),
        pytest.param(b"garbage", id="garbage"),
    ],
)
async def test_bytes_after_a_complete_response_close_the_pooled_connection(extra: bytes) -> None:
    seen: list[bytes] = []
    async with shared_pool(first_then_good(lambda _: OK + extra, seen)) as proxy:
        first = await get(proxy, "/attacker")
        assert (first.status, first.body) == (200, b"ok")  # the response itself stands
        for i in range(3):
            victim = await get(proxy, f"/victim-{i}")
            assert (victim.status, victim.body) == (200, f"/victim-{i}".encode())
        stats = proxy.cluster_stats()
        assert stats.upstream_cx_total == 2
        assert stats.upstream_cx_protocol_error == 1


async def test_a_head_response_followed_by_bytes_is_not_relayed_as_a_body() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
    async with shared_pool(first_then_good(lambda _: head + b"EVIL!", [])) as proxy:
        [response] = await asyncio.wait_for(
            wire.exchange(proxy.port(), wire.request("HEAD", "/h"), method="HEAD"), 10
        )
        assert (response.status, response.body) == (200, b"")
        assert (await get(proxy, "/victim")).body == b"/victim"
        assert proxy.cluster_stats().upstream_cx_total == 2


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
async def test_a_bodiless_status_with_transfer_encoding_gets_no_chunk_framing(status: bytes) -> None:
    """Found by the http1_response fuzzer: a 204 carrying ``Transfer-Encoding: chunked`` (and
    bytes after) reached the client followed by a last chunk, ``0\r\n\r\n``, which a
    keep-alive client reads as the start of its next response."""
    bad = b"HTTP/1.1 " + status + b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    async with (
        shared_pool(first_then_good(lambda _: bad, [])) as proxy,
        wire.connect(proxy.port()) as (reader, writer),
    ):
        writer.write(wire.request("GET", "/first"))
        first = await asyncio.wait_for(wire.read_response(reader), 10)
        assert first.status == int(status[:3]) and first.body == b""
        writer.write(wire.request("GET", "/second"))
        second = await asyncio.wait_for(wire.read_response(reader), 10)
        assert (second.status, second.body) == (200, b"/second")


# ------------------------------------------------------------------ finding 11


async def test_an_endless_response_header_line_is_cut_at_the_limit() -> None:
    written = 0
    cut = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-big: ")
        piece = b"a" * 65536
        try:
            for _ in range(256):  # 16 MiB at most: more than every socket buffer on the way
                writer.write(piece)
                await writer.drain()
                written += len(piece)
        except ConnectionError:
            cut.set()
        writer.close()

    async with shared_pool(endless) as proxy:
        response = await get(proxy, "/big")
        assert response.status == 502
        await asyncio.wait_for(cut.wait(), 10)
        assert proxy.cluster_stats().upstream_cx_protocol_error == 1
    assert written < 16 * 1024 * 1024
    print(f"upstream wrote {written / 1048576:.1f} MiB of one header line before the proxy closed")


@pytest.mark.parametrize(("count", "status"), [(100, 200), (101, 502)])
async def test_response_header_count_is_bounded(count: int, status: int) -> None:
    fields = b"".join(b"x-h%d: v\r\n" % i for i in range(count - 1))  # plus content-length
    response = b"HTTP/1.1 200 OK\r\n" + fields + b"content-length: 2\r\n\r\nok"
    async with shared_pool(first_then_good(lambda _: response, [])) as proxy:
        assert (await get(proxy, "/n")).status == status
        assert (await get(proxy, "/victim")).body == b"/victim"


async def test_the_cluster_response_header_limit_is_configurable() -> None:
    response = b"HTTP/1.1 200 OK\r\nx-a: " + b"a" * 2048 + b"\r\ncontent-length: 2\r\n\r\nok"
    options = {"common_http_protocol_options": {"max_response_headers_kb": 1}}
    async with shared_pool(first_then_good(lambda _: response, []), **options) as proxy:
        assert (await get(proxy, "/a")).status == 502
    async with shared_pool(first_then_good(lambda _: response, [])) as proxy:
        assert (await get(proxy, "/a")).status == 200


@pytest.mark.parametrize(
    "trailers",
    [
        pytest.param(b"x-t: " + b"t" * 200_000 + b"\r\n", id="one-huge-trailer"),
        pytest.param(b"".join(b"x-t%d: v\r\n" % i for i in range(150)), id="too-many-trailers"),
    ],
)
async def test_response_trailers_are_bounded(trailers: bytes) -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n" + trailers + b"\r\n"
    async with shared_pool(first_then_good(lambda _: chunked, [])) as proxy:
        async with wire.connect(proxy.port()) as (reader, writer):
            writer.write(wire.request("GET", "/t"))
            # The response began before the trailers: the client sees it cut, never complete.
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError, ValueError)):
                await asyncio.wait_for(wire.read_response(reader), 10)
        assert (await get(proxy, "/victim")).body == b"/victim"
        assert proxy.cluster_stats().upstream_cx_protocol_error == 1


# ------------------------------------------------------------------ finding 14


def reset_second_request(seen: list[bytes]) -> Handler:
    """Answers the first request on a connection; reads the second one whole, then resets."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            head, _ = await read_request(reader)
            seen.append(head.split(b"\r\n", 1)[0])
            writer.write(OK)
            await writer.drain()
            head, _ = await read_request(reader)
            seen.append(head.split(b"\r\n", 1)[0])  # the application has the request now
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    return handler


@pytest.mark.parametrize(
    ("method", "body"), [("GET", b""), ("DELETE", b""), ("POST", b""), ("POST", b"payload")]
)
async def test_a_request_read_before_a_reset_is_not_sent_again(method: str, body: bytes) -> None:
    seen: list[bytes] = []
    async with raw_upstream(reset_second_request(seen)) as port, proxy_to(port) as proxy:
        async with wire.connect(proxy.port()) as (reader, writer):
            writer.write(wire.request("GET", "/first"))
            assert (await asyncio.wait_for(wire.read_response(reader), 10)).status == 200
            writer.write(wire.request(method, "/second", body=body))
            second = await asyncio.wait_for(wire.read_response(reader), 10)
        assert second.status == 503
        assert b"reset" in second.body
        assert seen == [b"GET /first HTTP/1.1", f"{method} /second HTTP/1.1".encode()]


async def test_a_pooled_connection_the_host_closed_is_not_used() -> None:
    # The host answers and closes at once; the client's second request is pipelined behind
    # the first, so the proxy picks the pooled connection before it has read the FIN. The
    # FIN is already in the kernel: the pool sees it and the request goes on a new connection.
    seen: list[bytes] = []

    async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            head, _ = await read_request(reader)
            seen.append(head.split(b"\r\n", 1)[0])
            writer.write(answer_target(head))
            fd = writer.get_extra_info("socket").fileno()  # uvloop's socket object has no shutdown()
            with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.shutdown(socket.SHUT_RDWR)  # the FIN leaves now, before the proxy reads
        writer.close()

    async with raw_upstream(answer_and_close) as port, proxy_to(port) as proxy:
        pipelined = b"".join(wire.request("GET", f"/{i}") for i in range(4))
        responses = await asyncio.wait_for(wire.exchange(proxy.port(), pipelined, count=4), 10)
        assert [(r.status, r.body) for r in responses] == [(200, f"/{i}".encode()) for i in range(4)]
        assert proxy.cluster_stats().upstream_rq_retry_reused >= 1
    assert seen == [f"GET /{i} HTTP/1.1".encode() for i in range(4)]
