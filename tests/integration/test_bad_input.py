"""Bad input from downstream clients: exact bytes on raw sockets, and what the proxy does with them.

Every case checks the whole contract of issue 2's smuggling defences: the status line received,
the connection then closed by the proxy (a read returns EOF), the upstream never seeing the
request (a raw upstream records every request head that reaches it), the proxy still serving a
good request on a new connection, and the counter that moved. The raw-socket reads use
``loop.sock_recv`` rather than a StreamReader on purpose: after a reset a StreamReader raises
before returning bytes it already buffered, and the kernel would still hand them to us.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable
from operator import attrgetter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshproxy.stats import HttpStats

from . import wire
from .harness import Proxy, eventually, proxy_to
from .upstreams import aiohttp_upstream, counting_upstream

TIMEOUT = 10.0
DEFAULT_LIMIT = 60 * 1024

Counter = Callable[[HttpStats], int]
PROTOCOL_ERROR: Counter = attrgetter("downstream_cx_protocol_error")
HEADERS_TOO_LARGE: Counter = attrgetter("downstream_rq_431")


def client_errors(stats: HttpStats) -> int:
    return stats.downstream_rq_xx[4]


# ------------------------------------------------------------------ raw-socket client


async def open_raw(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def read_until_close(sock: socket.socket, quiet: float = TIMEOUT) -> tuple[bytes, str]:
    """Everything the proxy sends until it closes; how it ended: "eof", "reset", or "quiet"
    (nothing arrived for ``quiet`` seconds: the proxy is waiting for more input)."""
    loop = asyncio.get_running_loop()
    received: list[bytes] = []
    for _ in range(10_000):
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), quiet)
        except TimeoutError:
            return b"".join(received), "quiet"
        except ConnectionResetError:
            return b"".join(received), "reset"
        if not data:
            return b"".join(received), "eof"
        received.append(data)
    raise AssertionError("the proxy kept sending")


async def send_raw(port: int, data: bytes) -> tuple[bytes, str]:
    """Write ``data`` in one piece on a fresh connection and read until the proxy closes it."""
    sock = await open_raw(port)
    try:
        await asyncio.get_running_loop().sock_sendall(sock, data)
        return await read_until_close(sock)
    finally:
        sock.close()


async def parse_responses(data: bytes, limit: int = 10) -> list[wire.Response]:
    """Split received bytes into (at most ``limit``) responses with the independent parser in ``wire``."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    responses = []
    for _ in range(limit):
        if reader.at_eof():
            break
        responses.append(await wire.read_response(reader))
    return responses


# ------------------------------------------------------------------ the contract


async def assert_still_serving(proxy: Proxy, heads: list[bytes], forwarded: int = 0) -> None:
    """A good request on a new connection is answered, and before it the upstream had seen
    exactly ``forwarded`` requests."""
    [resp] = await wire.exchange(proxy.port(), wire.request("GET", "/after"))
    assert resp.status == 200
    assert len(heads) == forwarded + 1, f"upstream saw {heads[:-1]!r} besides the good request"
    assert heads[-1].startswith(b"GET /after ")


async def assert_rejected(
    proxy: Proxy, heads: list[bytes], raw: bytes, status: int, counter: Counter, forwarded: int = 0
) -> None:
    stats = proxy.http_stats()
    before = counter(stats)
    data, ending = await send_raw(proxy.port(), raw)
    responses = await parse_responses(data)
    assert [r.status for r in responses] == [status], data[:300]
    assert responses[0].get("connection") == "close"
    assert ending == "eof", "the proxy must close the connection after a rejected request"
    assert counter(stats) == before + 1
    await assert_still_serving(proxy, heads, forwarded)


def head(*lines: str, body: bytes = b"") -> bytes:
    """A request from exact lines, CRLF-terminated, with an empty line after the head."""
    return "".join(line + "\r\n" for line in lines).encode("latin-1") + b"\r\n" + body


def case(case_id: str, raw: bytes, status: int = 400, counter: Counter = PROTOCOL_ERROR) -> Any:
    return pytest.param(raw, status, counter, id=case_id)


GET, POST, HOST = "GET / HTTP/1.1", "POST / HTTP/1.1", "Host: test"
BIG_HEADERS = [f"X-Filler-{i}: {'v' * 100}" for i in range((DEFAULT_LIMIT // 100) + 20)]

CASES = [
    case("header_block_over_60k", head(GET, HOST, *BIG_HEADERS), 431, HEADERS_TOO_LARGE),
    case("malformed_request_line", head("GET/ HTTP/1.1", HOST)),
    case("request_line_junk", head("GET / HTTP/1.1 extra", HOST)),
    case("header_name_space", head(GET, HOST, "Bad Name: v")),
    case("header_name_char", head(GET, HOST, "X(y): v")),
    case("header_value_nul", head(GET, HOST, "X-V: a\x00b")),
    case("header_value_del", head(GET, HOST, "X-V: a\x7fb")),
    case(
        "content_length_and_chunked",
        head(POST, HOST, "Content-Length: 5", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    ),
    case("two_content_lengths", head(POST, HOST, "Content-Length: 3", "Content-Length: 4", body=b"abcd")),
    case(
        "invalid_chunk_size", head(POST, HOST, "Transfer-Encoding: chunked", body=b"zz\r\nabc\r\n0\r\n\r\n")
    ),
    case("transfer_encoding_not_chunked_final", head(POST, HOST, "Transfer-Encoding: gzip", body=b"abc")),
    case("obs_fold", head(GET, HOST, "X-Folded: a", "  b")),
    case("bare_lf", b"GET / HTTP/1.1\nHost: test\nX-A: a\n\n"),
    case("bare_lf_in_head", b"GET / HTTP/1.1\r\nHost: test\nX-A: a\r\n\r\n"),
    case("missing_host", head(GET)),
    case("duplicate_host", head(GET, "Host: a", "Host: b")),
    case("connect", head("CONNECT test:443 HTTP/1.1", "Host: test:443"), 405, client_errors),
]


@pytest.mark.parametrize(("raw", "status", "counter"), CASES)
async def test_bad_request_is_answered_then_closed(raw: bytes, status: int, counter: Counter) -> None:
    async with counting_upstream() as (up, heads), proxy_to(up) as proxy:
        await assert_rejected(proxy, heads, raw, status, counter)


async def test_configured_header_limit_of_one_kib() -> None:
    async with counting_upstream() as (up, heads), proxy_to(up, max_request_headers_kb=1) as proxy:
        [small] = await wire.exchange(
            proxy.port(), head("GET /small HTTP/1.1", "Host: test", "X-A: " + "a" * 700)
        )
        assert small.status == 200
        over = head("GET / HTTP/1.1", "Host: test", "X-A: " + "a" * 1200)
        await assert_rejected(proxy, heads, over, 431, HEADERS_TOO_LARGE, forwarded=1)


async def test_huge_header_value_in_small_writes_is_refused_early() -> None:
    """One header value that never ends, 1 KiB per write: the proxy must answer 431 once the
    block passes the limit instead of buffering until the value ends."""
    chunk = b"a" * 1024
    async with counting_upstream() as (up, heads), proxy_to(up) as proxy:
        loop = asyncio.get_running_loop()
        sock = await open_raw(proxy.port())
        sent = 0
        try:
            await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: test\r\nX-Huge: ")
            for _ in range(1024):  # at most 1 MiB
                try:
                    await loop.sock_sendall(sock, chunk)
                except ConnectionError:
                    break
                sent += len(chunk)
                await asyncio.sleep(0)  # a turn for the in-process proxy to read (not a timed wait)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break  # the answer is there: stop writing
                except BlockingIOError:
                    continue
            data, ending = await read_until_close(sock)
        finally:
            sock.close()
        [resp] = await parse_responses(data)
        assert resp.status == 431
        assert sent < 2 * DEFAULT_LIMIT, f"the proxy read {sent} bytes of one header before refusing"
        # The client may have written once more after the proxy closed; TCP then answers with a
        # reset rather than a FIN, which is still the proxy closing the connection.
        assert ending in ("eof", "reset")
        assert proxy.http_stats().downstream_rq_431 == 1
        await assert_still_serving(proxy, heads)


async def test_bad_request_pipelined_after_good_one() -> None:
    good = wire.request("GET", "/first")
    bad = head("POST / HTTP/1.1", "Host: test", "Content-Length: 1", "Content-Length: 2", body=b"ab")
    async with counting_upstream() as (up, heads), proxy_to(up) as proxy:
        data, ending = await send_raw(proxy.port(), good + bad)
        responses = await parse_responses(data)
        assert [r.status for r in responses] == [200, 400], data[:400]
        assert responses[0].body == b"ok\n"
        assert responses[1].get("connection") == "close"
        assert ending == "eof"
        assert proxy.http_stats().downstream_cx_protocol_error == 1
        assert heads[0].startswith(b"GET /first ")
        await assert_still_serving(proxy, heads, forwarded=1)


@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: test\r\nX-Cut: ", id="inside_the_head"),
        pytest.param(
            head("POST / HTTP/1.1", "Host: test", "Content-Length: 10", body=b"abc"), id="inside_the_body"
        ),
    ],
)
async def test_client_half_closing_mid_request_is_closed(partial: bytes) -> None:
    """A client that sends part of a request and then its FIN can never complete it: the
    proxy must close the connection (and abandon the exchange) rather than wait for bytes
    that cannot come (RFC 9112 §9.6 allows half-close only around a complete request)."""
    async with counting_upstream() as (up, _), proxy_to(up) as proxy:
        sock = await open_raw(proxy.port())
        try:
            await asyncio.get_running_loop().sock_sendall(sock, partial)
            sock.shutdown(socket.SHUT_WR)
            data, ending = await read_until_close(sock, quiet=3.0)
        finally:
            sock.close()
        assert ending in ("eof", "reset"), "the proxy kept a half-closed, incomplete request open"
        if data:
            assert data.startswith(b"HTTP/1.1 4"), data[:100]
        stats = proxy.http_stats()
        await eventually(lambda: stats.downstream_rq_active == 0, timeout=3, what="no stream left active")


# ------------------------------------------------------------------ property: never crash

VALID_REQUESTS = (
    wire.request("GET", "/echo/a?x=1", [("Accept", "*/*")]),
    wire.request("POST", "/echo", [("Content-Type", "text/plain")], b"hello world"),
    head("POST /echo HTTP/1.1", "Host: test", "Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"),
    wire.request("GET", "/", version="HTTP/1.0", host=None),
)
# Bytes that matter to an HTTP/1.1 parser, spliced into valid requests.
TOKENS = (
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b":",
    b"\x00",
    b"\t",
    b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n",
)
STATUS_LINE = re.compile(rb"HTTP/1\.1 [1-5]\d\d [ -~]*\r\n")


@st.composite
def mutated_request(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_REQUESTS)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(("insert", "delete", "replace")))
        if op == "insert":
            data[pos:pos] = draw(st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=8)))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif data:
            data[pos] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.fixture
async def fuzz_target() -> AsyncIterator[Proxy]:
    """One proxy for all of a property test's examples; afterwards nothing may be left open."""
    async with aiohttp_upstream() as up, proxy_to(up) as proxy:
        yield proxy
        listener = proxy.listener_stats()
        await eventually(
            lambda: listener.downstream_cx_active == 0, timeout=3, what="every connection closed"
        )
        assert proxy.http_stats().downstream_rq_active == 0


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300), mutated_request()))
async def test_arbitrary_bytes_never_break_the_proxy(fuzz_target: Proxy, data: bytes) -> None:
    sock = await open_raw(fuzz_target.port())
    try:
        await asyncio.get_running_loop().sock_sendall(sock, data)
        # "quiet": the proxy is waiting for the rest of a request, or keeping the connection alive.
        received, ending = await read_until_close(sock, quiet=0.1)
        h2 = data.startswith(H2_PREFACE)
        responses = await parse_responses(received) if received and not h2 else []
        refused = [r for r in responses if r.get("server") == "meshproxy" and r.status in (400, 431)]
        if refused and ending == "quiet":
            # A refusal promises a close: allow a loaded machine more than 0.1 s to deliver it.
            more, ending = await read_until_close(sock, quiet=3.0)
            assert not more, more[:100]
    finally:
        sock.close()
    if h2:
        # The HTTP/2 connection preface switches the AUTO codec to HTTP/2: the proxy answers with
        # frames (its SETTINGS first, type 0x4 in the frame header's fourth byte), not a status line.
        assert not received or received[3] == 0x4, received[:100]
    elif received:
        assert STATUS_LINE.match(received), received[:100]
        for resp in refused:
            assert resp.get("connection") == "close" and ending != "quiet"
    [good] = await wire.exchange(fuzz_target.port(), wire.request("GET", "/echo/good"))
    assert good.status == 200


async def test_transfer_coding_other_than_chunked_is_refused_with_501() -> None:
    # "gzip, chunked" passes llhttp (chunked is last) but this hop re-frames bodies, so the gzip
    # coding would be silently lost: the proxy must refuse it instead (RFC 9112 §6.1).
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    async with counting_upstream() as (up, heads), proxy_to(up) as proxy:
        data, ending = await send_raw(proxy.port(), raw)
        responses = await parse_responses(data)
        assert [r.status for r in responses] == [501]
        assert ending == "eof"
        assert heads == []
