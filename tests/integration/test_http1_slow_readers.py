"""Slow readers (issue 12 finding 7, downstream leg): a pipelining client that does not read
is not read either, once its write buffer passes ``per_connection_buffer_limit_bytes``.

Many slow readers at once against a proxy process, with the memory they cost and whether it is
returned, are in the exhaustion suite (``test_exhaustion.py``, ``test_exhaustion_http2.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from .harness import bootstrap, cluster, eventually, http_listener, route, running_proxy
from .upstreams import raw_upstream, read_request


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
