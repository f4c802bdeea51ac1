"""HTTP/1.1 request-side hardening (issue 12): h2c never tunnelled, request-target and header
checks, header-count and trailer bounds, underscores, 100-continue, on raw sockets.

Each test attacks the real proxy the way the issue's finding did and checks what reaches the
upstream (a raw upstream records every request head), what the client gets, that the
connection then closes where it must, and the counter that moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import pytest

from meshproxy.stats import HttpStats

from . import wire
from .harness import eventually, proxy_to
from .test_bad_input import (
    HEADERS_TOO_LARGE,
    PROTOCOL_ERROR,
    Counter,
    assert_rejected,
    head,
    open_raw,
    parse_responses,
    read_until_close,
    send_raw,
)
from .upstreams import aiohttp_upstream, counting_upstream, raw_upstream, read_request

GET, POST, HOST = "GET / HTTP/1.1", "POST / HTTP/1.1", "Host: test"


def server_errors(stats: HttpStats) -> int:
    return stats.downstream_rq_xx[5]


# ------------------------------------------------------------------ h2c (finding 2)


@dataclass
class H2cUpstream:
    """An origin that accepts ``Upgrade: h2c`` (101, then HTTP/2 as RFC 7540 §3.2 says) and
    records every HTTP/2 request it then receives; plain HTTP/1.1 requests get ``plain``."""

    port: int = 0
    heads: list[bytes] = field(default_factory=list)
    h2_paths: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                request, _ = await read_request(reader)
                self.heads.append(request)
                lines = [line.split(b":", 1) for line in request.split(b"\r\n")[1:] if b":" in line]
                fields = {n.strip().lower(): v.strip() for n, v in lines}
                if fields.get(b"upgrade", b"").lower() != b"h2c":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain")
                    await writer.drain()
                    continue
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"
                )
                conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
                conn.initiate_upgrade_connection(fields.get(b"http2-settings", b""))
                writer.write(conn.data_to_send())
                while data := await reader.read(65536):
                    for event in conn.receive_data(data):
                        if isinstance(event, h2.events.RequestReceived):
                            path = dict(event.headers).get(b":path", b"")
                            self.h2_paths.append(path)
                            conn.send_headers(event.stream_id, [(b":status", b"200")], end_stream=True)
                    writer.write(conn.data_to_send())
                return


@contextlib.asynccontextmanager
async def h2c_upstream() -> AsyncIterator[H2cUpstream]:
    up = H2cUpstream()
    async with raw_upstream(up.handle) as port:
        up.port = port
        yield up


def h2c_attack(connection: str) -> bytes:
    """An h2c upgrade, then (as if switched) HTTP/2 asking for an internal path."""
    client = h2.connection.H2Connection()
    settings = client.initiate_upgrade_connection()
    client.send_headers(
        3,
        [(":method", "GET"), (":path", "/internal/secret-via-h2c"), (":scheme", "http"), (":authority", "t")],
        end_stream=True,
    )
    upgrade = head(
        GET, HOST, "Upgrade: h2c", f"Connection: {connection}", f"HTTP2-Settings: {settings.decode()}"
    )
    return upgrade + client.data_to_send()


@pytest.mark.parametrize(
    "connection",
    [pytest.param("Upgrade, HTTP2-Settings", id="proper"), pytest.param("Upgrade", id="settings-not-listed")],
)
async def test_h2c_upgrade_is_forwarded_as_plain_http1(connection: str) -> None:
    async with h2c_upstream() as up, proxy_to(up.port) as proxy:
        data, _ = await send_raw(proxy.port(), h2c_attack(connection))
        responses = await parse_responses(data)
        # The upgrade request answered as plain HTTP/1.1; the HTTP/2 bytes after it are then
        # parsed as HTTP/1.1 and refused (400 and close).
        assert [r.status for r in responses] == [200, 400], data[:300]
        assert responses[0].body == b"plain"
        assert not up.h2_paths, f"HTTP/2 requests reached the upstream through a tunnel: {up.h2_paths}"
        [seen] = up.heads
        lowered = seen.lower()
        assert b"upgrade" not in lowered and b"http2-settings" not in lowered, seen
        [after] = await wire.exchange(proxy.port(), wire.request("GET", "/after"))
        assert after.status == 200 and not up.h2_paths


@pytest.mark.parametrize("filler", [0, 40_000], ids=["small-body", "body-over-several-reads"])
async def test_refused_upgrade_with_a_body_keeps_its_framing_and_the_connection(filler: int) -> None:
    """A POST whose body llhttp would hand over as upgrade bytes: the body goes upstream under
    its Content-Length, and a request pipelined after it is parsed as HTTP again."""
    body = b"x" * filler + b"GET /SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"
    raw = head(
        POST, HOST, f"Content-Length: {len(body)}", "Upgrade: websocket", "Connection: Upgrade", body=body
    )
    seen: list[tuple[bytes, bytes]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                seen.append(await read_request(reader))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()

    async with raw_upstream(serve) as port, proxy_to(port) as proxy:
        data, _ = await send_raw(proxy.port(), raw + head("GET /second HTTP/1.1", HOST, "Connection: close"))
        assert [r.status for r in await parse_responses(data)] == [200, 200], data[:400]
        assert [h.split(b" ")[1] for h, _ in seen] == [b"/", b"/second"]
        assert seen[0][1] == body
        assert b"upgrade" not in seen[0][0].lower()


# ------------------------------------------------------------------ request target and fields (16)

BAD_TARGETS = [
    pytest.param(head(POST, "Host: a b", "Content-Length: 0"), 400, PROTOCOL_ERROR, id="host-with-space"),
    pytest.param(head(POST, "Host: a/b@c", "Content-Length: 0"), 400, PROTOCOL_ERROR, id="host-slash-at"),
    pytest.param(head(GET, "Host: user@test"), 400, PROTOCOL_ERROR, id="host-userinfo"),
    pytest.param(head("GET http://a b/ HTTP/1.1", HOST), 400, PROTOCOL_ERROR, id="absolute-form-space"),
    pytest.param(head("GET /x#frag HTTP/1.1", HOST), 400, PROTOCOL_ERROR, id="fragment"),
    pytest.param(head("GET  / HTTP/1.1", HOST), 400, PROTOCOL_ERROR, id="double-space-request-line"),
    pytest.param(head("GET /  HTTP/1.1", HOST), 400, PROTOCOL_ERROR, id="double-space-before-version"),
    pytest.param(head("GET / HTTP/2.0", HOST), 400, PROTOCOL_ERROR, id="http2-version"),
    pytest.param(
        head(POST, HOST, "Transfer-Encoding: gzip", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        501,
        server_errors,
        id="gzip-on-an-earlier-te-line",
    ),
    pytest.param(
        head(POST, HOST, "Transfer-Encoding: identity", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        501,
        server_errors,
        id="identity-then-chunked-lines",
    ),
    pytest.param(
        head("POST / HTTP/1.0", HOST, "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        400,
        PROTOCOL_ERROR,
        id="te-in-http10",  # RFC 9112 §6.1: faulty framing (found by the fuzzer)
    ),
]


@pytest.mark.parametrize(("raw", "status", "counter"), BAD_TARGETS)
async def test_malformed_target_or_field_is_refused(raw: bytes, status: int, counter: Counter) -> None:
    async with counting_upstream() as (up, heads), proxy_to(up) as proxy:
        await assert_rejected(proxy, heads, raw, status, counter)


async def test_valid_authorities_pass() -> None:
    async with counting_upstream() as (up, heads), proxy_to(up) as proxy:
        for host in ("test", "test:8080", "[::1]:80", "a-b.c_d~e", "10.0.0.1"):
            [resp] = await wire.exchange(proxy.port(), head(GET, f"Host: {host}"))
            assert resp.status == 200, host
        assert len(heads) == 5


async def test_double_space_after_a_leading_empty_line_is_refused_too() -> None:
    async with counting_upstream() as (up, heads), proxy_to(up) as proxy:
        await assert_rejected(proxy, heads, b"\r\n" + head("GET  / HTTP/1.1", HOST), 400, PROTOCOL_ERROR)


async def test_request_line_split_over_reads_is_checked() -> None:
    async with counting_upstream() as (up, heads), proxy_to(up) as proxy:
        loop = asyncio.get_running_loop()
        sock = await open_raw(proxy.port())
        try:
            await loop.sock_sendall(sock, b"GET  /")
            await asyncio.sleep(0.05)  # two TCP segments; the order is what matters, not the delay
            await loop.sock_sendall(sock, b" HTTP/1.1\r\nHost: test\r\n\r\n")
            data, ending = await read_until_close(sock)
        finally:
            sock.close()
        assert data.startswith(b"HTTP/1.1 400 "), data[:100]
        assert ending == "eof" and heads == []


async def test_expect_continue_without_body_gets_no_100() -> None:
    async with counting_upstream() as (up, _), proxy_to(up) as proxy:
        data, _ = await send_raw(proxy.port(), head(GET, HOST, "Expect: 100-continue", "Connection: close"))
        assert data.startswith(b"HTTP/1.1 200 "), data[:200]
        assert b"100 Continue" not in data


async def test_expect_continue_with_body_still_gets_100() -> None:
    async with (
        counting_upstream() as (up, _),
        proxy_to(up) as proxy,
        wire.connect(proxy.port()) as (reader, writer),
    ):
        writer.write(head(POST, HOST, "Expect: 100-continue", "Content-Length: 3"))
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"abc")
        assert (await asyncio.wait_for(wire.read_response(reader), 5)).status == 200


# ------------------------------------------------------------------ counts and trailers (finding 11)


async def test_header_count_over_max_headers_count_is_refused() -> None:
    options = {"common_http_protocol_options": {"max_headers_count": 10}}
    async with counting_upstream() as (up, heads), proxy_to(up, **options) as proxy:
        fine = head(GET, HOST, *[f"X-{i}: v" for i in range(9)])
        [ok] = await wire.exchange(proxy.port(), fine)
        assert ok.status == 200
        over = head(GET, HOST, *[f"X-{i}: v" for i in range(10)])
        await assert_rejected(proxy, heads, over, 431, HEADERS_TOO_LARGE, forwarded=1)


async def test_default_header_count_is_100() -> None:
    async with counting_upstream() as (up, heads), proxy_to(up) as proxy:
        await assert_rejected(
            proxy, heads, head(GET, HOST, *[f"X-{i}: v" for i in range(100)]), 431, HEADERS_TOO_LARGE
        )


async def test_trailer_count_is_bounded() -> None:
    options = {"common_http_protocol_options": {"max_headers_count": 10}}
    trailers = "".join(f"X-T{i}: v\r\n" for i in range(11)).encode()
    raw = head(
        "POST /upload HTTP/1.1",
        HOST,
        "Transfer-Encoding: chunked",
        body=b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n",
    )
    async with aiohttp_upstream() as up, proxy_to(up, **options) as proxy:
        data, ending = await send_raw(proxy.port(), raw)
        assert data.startswith(b"HTTP/1.1 431 "), data[:200]
        assert ending == "eof"
        assert proxy.http_stats().downstream_rq_431 == 1


async def _stream_until_refused(port: int, start: bytes, piece: bytes, most: int) -> tuple[int, bytes, str]:
    """Write ``start`` then ``piece`` repeatedly (at most ``most`` bytes) until the proxy
    answers; returns how much was written and what came back."""
    loop = asyncio.get_running_loop()
    sock = await open_raw(port)
    sent = 0
    try:
        await loop.sock_sendall(sock, start)
        while sent < most:
            try:
                await loop.sock_sendall(sock, piece)
            except ConnectionError:
                break
            sent += len(piece)
            await asyncio.sleep(0)  # a turn for the in-process proxy to read (not a timed wait)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except BlockingIOError:
                continue
        data, ending = await read_until_close(sock)
    finally:
        sock.close()
    return sent, data, ending


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(b"3\r\nabc\r\n0\r\nX-Huge-Trailer: ", id="one-endless-trailer"),
        pytest.param(b"3;ext=", id="endless-chunk-extension"),
    ],
)
async def test_trailers_and_chunk_extensions_are_cut_at_the_header_limit(start: bytes) -> None:
    limit = 60 * 1024
    async with aiohttp_upstream() as up, proxy_to(up) as proxy:  # it answers after the whole body
        request = head("POST /upload HTTP/1.1", HOST, "Transfer-Encoding: chunked") + start
        sent, data, ending = await _stream_until_refused(proxy.port(), request, b"a" * 4096, 16 * limit)
        assert data.startswith(b"HTTP/1.1 431 "), data[:200]
        assert sent < 8 * limit, f"the proxy read {sent} bytes of one trailer or extension"
        assert ending in ("eof", "reset")
        assert proxy.http_stats().downstream_rq_431 == 1


async def test_ordinary_trailers_and_extensions_pass() -> None:
    body = b"3;name=value\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n"
    async with counting_upstream() as (up, _), proxy_to(up) as proxy:
        [resp] = await wire.exchange(proxy.port(), head(POST, HOST, "Transfer-Encoding: chunked", body=body))
        assert resp.status == 200


# ------------------------------------------------------------------ underscores (finding 12)


async def test_headers_with_underscores_rejected() -> None:
    options = {"common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"}}
    async with counting_upstream() as (up, heads), proxy_to(up, **options) as proxy:
        stats = proxy.http_stats()
        await assert_rejected(proxy, heads, head(GET, HOST, "X_Forwarded_User: admin"), 400, PROTOCOL_ERROR)
        assert stats.requests_rejected_with_underscores_in_headers == 1


async def test_headers_with_underscores_dropped() -> None:
    options = {"common_http_protocol_options": {"headers_with_underscores_action": "DROP_HEADER"}}
    async with counting_upstream() as (up, heads), proxy_to(up, **options) as proxy:
        [resp] = await wire.exchange(proxy.port(), head(GET, HOST, "X_Forwarded_User: admin", "X-Kept: 1"))
        assert resp.status == 200
        assert b"x_forwarded_user" not in heads[0].lower() and b"x-kept: 1" in heads[0]
        assert proxy.http_stats().dropped_headers_with_underscores == 1


async def test_headers_with_underscores_allowed_by_default() -> None:
    async with counting_upstream() as (up, heads), proxy_to(up) as proxy:
        [resp] = await wire.exchange(proxy.port(), head(GET, HOST, "X_Forwarded_User: admin"))
        assert resp.status == 200
        assert b"x_forwarded_user: admin" in heads[0].lower()


async def test_connection_cannot_remove_content_length() -> None:
    """Finding 1 with an honest upstream: the body keeps its Content-Length on the way up."""
    seen: list[tuple[bytes, bytes]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            seen.append(await read_request(reader))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    raw = head(
        POST, HOST, "Content-Length: 5", "Connection: close, content-length, x-hop", "X-Hop: 1", body=b"hello"
    )
    async with raw_upstream(serve) as port, proxy_to(port) as proxy:
        data, _ = await send_raw(proxy.port(), raw)
        assert data.startswith(b"HTTP/1.1 200 "), data[:200]
        [(request, body)] = seen
        assert body == b"hello"
        assert b"content-length: 5" in request.lower() and b"x-hop" not in request.lower()


async def test_pipelined_read_does_not_count_against_the_next_head() -> None:
    """Many complete small requests and the start of one more in a single read: the head
    limit applies to that last head's own bytes, not to the whole read (a false 431)."""
    pipelined = wire.request("GET", "/p") * 3000  # about 100 KiB, over the 60 KiB head limit
    async with counting_upstream() as (up, heads), proxy_to(up) as proxy:
        loop = asyncio.get_running_loop()
        sock = await open_raw(proxy.port())
        try:
            await loop.sock_sendall(sock, pipelined + b"GET /last HTTP/1.1\r\nHost: test\r\n")
            await eventually(lambda: len(heads) == 3000, what="the complete requests answered")
            await loop.sock_sendall(sock, b"Connection: close\r\n\r\n")
            data, ending = await read_until_close(sock)
        finally:
            sock.close()
        statuses = [r.status for r in await parse_responses(data, limit=4000)]
        assert statuses == [200] * 3001, statuses[-3:]
        assert ending == "eof" and heads[-1].startswith(b"GET /last ")
