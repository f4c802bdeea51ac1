"""Slow readers against a proxy process (issue 12 finding 7, downstream leg): what the proxy
buffers for a client that does not read is bounded by ``per_connection_buffer_limit_bytes``.

50 clients with small receive buffers each ask for a large body and then stop reading; the
proxy must pause reading the upstream once a client's write buffer passes the limit instead of
holding the body. RSS is read from /proc before, at the plateau and after the clients left;
the figures are printed, and only a generous bound is asserted (the allocator decides the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import socket
from collections.abc import Callable

from .harness import bootstrap, cluster, eventually, http_listener, proxy_process, route, running_proxy
from .test_bad_input import open_raw
from .upstreams import aiohttp_upstream, raw_upstream, read_request

CLIENTS = 50
BODY = 32 * 1024 * 1024  # per client: far more than any buffer on the way
MIB = 1024 * 1024


async def _stalled_client(port: int) -> socket.socket:
    """Ask for a large body, read its head, then stop reading (a 16 KiB receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, b"GET /bytes/%d HTTP/1.1\r\nHost: test\r\n\r\n" % BODY)
    first = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
    assert first.startswith(b"HTTP/1.1 200 "), first[:100]
    return sock


async def _plateau(read_rss: object, samples: int = 60) -> int:
    """The peak RSS once it stops growing (two readings 0.25 s apart within 1 MiB), bounded."""
    assert callable(read_rss)
    peak = last = read_rss()
    for _ in range(samples):
        await asyncio.sleep(0.25)  # sampling a process from outside: time is the only clock
        now = read_rss()
        peak = max(peak, now)
        if abs(now - last) < MIB:
            break
        last = now
    return int(peak)


async def test_fifty_slow_readers_cost_a_bounded_amount_of_memory(tmp_path: pathlib.Path) -> None:
    async with aiohttp_upstream() as up:
        doc = bootstrap([http_listener([route()])], [cluster("backend", up)])
        with proxy_process(doc, tmp_path) as proc:
            warm = await _stalled_client(proc.port())
            warm.close()
            start = proc.rss_bytes()
            clients = [await _stalled_client(proc.port()) for _ in range(CLIENTS)]
            try:
                peak = await _plateau(proc.rss_bytes)
            finally:
                for sock in clients:
                    sock.close()
            # A good client is still served while (and after) the slow ones held their buffers.
            check = await open_raw(proc.port())
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(check, b"GET /echo HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(loop.sock_recv(check, 4096), 10)
            check.close()
            after = await _plateau(proc.rss_bytes)
        print(
            f"RSS: start {start / MIB:.1f} MiB, {CLIENTS} slow readers {peak / MIB:.1f} MiB "
            f"(+{(peak - start) / MIB:.1f}), after they left {after / MIB:.1f} MiB"
        )
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
        assert peak - start < 100 * MIB, f"{CLIENTS} slow readers took {(peak - start) / MIB:.0f} MiB"


async def test_pipelining_client_that_does_not_read_is_not_read_either() -> None:
    """A client pipelines many requests whose responses it never reads: once its write buffer
    passes the limit the proxy stops reading it, so the upstream sees only the requests whose
    responses fit in the kernel's buffers and the limit; reading on resumes all of them."""
    count, size, limit = 20_000, 1024, 16 * 1024  # each response completes in one upstream read
    body = b"r" * size
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head, _ = await read_request(reader)
                seen.append(head)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (size, body))
                await writer.drain()

    async with raw_upstream(serve) as port:
        listener = {**http_listener([route()]), "per_connection_buffer_limit_bytes": limit}
        async with running_proxy(bootstrap([listener], [cluster("backend", port)])) as proxy:
            await _pipeline_without_reading(proxy.port(), seen, count, size)


async def _pipeline_without_reading(port: int, seen: list[bytes], count: int, size: int) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    try:
        requests = b"GET /p HTTP/1.1\r\nHost: test\r\n\r\n" * count
        sender = asyncio.ensure_future(loop.sock_sendall(sock, requests))
        await _settled(lambda: len(seen))
        stalled_at = len(seen)
        print(f"{count} pipelined requests, responses unread: the upstream saw {stalled_at}")
        assert stalled_at < count // 2, f"the proxy read {stalled_at} requests it could not answer"
        received = 0
        while received < count * size:  # now read on: every request is answered
            data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
            assert data, "the proxy closed the connection"
            received += len(data)
        await asyncio.wait_for(sender, 10)
        await eventually(lambda: len(seen) == count, what="every pipelined request forwarded")
    finally:
        sock.close()


async def _settled(value: Callable[[], int], rounds: int = 50) -> None:
    """Until ``value()`` stops changing across 0.1 s (bounded: ``rounds`` readings)."""
    last = -1
    for _ in range(rounds):
        now = value()
        if now == last:
            return
        last = now
        await asyncio.sleep(0.1)  # waiting for nothing to happen: time is the only signal
