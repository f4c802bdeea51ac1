"""A minimal HTTP/1.1 client on raw asyncio sockets, for tests where the bytes matter.

Owns what httpx/aiohttp hide: writing a request exactly as given (pipelined, HTTP/1.0,
``Expect``, odd headers) and reading responses one at a time with their framing as sent
(content-length, chunked, close-delimited, or none for HEAD/1xx/204/304). Independent of
httptools on purpose: the proxy parses with it, so the tests must not. Every read is bounded
by a timeout so a proxy that stalls fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

TIMEOUT = 10.0
NO_BODY_STATUS = frozenset({204, 304})


@dataclass
class Response:
    status: int
    version: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    head: bytes = b""  # the status line and header block exactly as received

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def names(self) -> set[str]:
        return {n for n, _ in self.headers}


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def request(
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    version: str = "HTTP/1.1",
    host: str | None = "test",
) -> bytes:
    """A request's bytes; ``content-length`` is added when ``body`` is given and not set."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    hdrs = list(headers or [])
    if body and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in hdrs):
        hdrs.append(("Content-Length", str(len(body))))
    lines += [f"{n}: {v}" for n, v in hdrs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_head(reader: asyncio.StreamReader) -> Response:
    async with asyncio.timeout(TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head[:-4].split(b"\r\n")
    version, status, *_ = status_line.split(b" ", 2)
    headers = []
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
    return Response(int(status), version, headers, head=head)


async def read_response(reader: asyncio.StreamReader, *, method: str = "GET") -> Response:
    """One final response (interim 1xx responses are skipped) with its body, framed as sent."""
    for _ in range(10):
        resp = await read_head(reader)
        if not 100 <= resp.status < 200 or resp.status == 101:
            break
    else:
        raise AssertionError("more than ten interim responses")
    if method == "HEAD" or resp.status in NO_BODY_STATUS or resp.status == 101:
        return resp
    async with asyncio.timeout(TIMEOUT):
        if "chunked" in (resp.get("transfer-encoding") or "").lower():
            resp.body = await _read_chunked(reader)
        elif (length := resp.get("content-length")) is not None:
            resp.body = await reader.readexactly(int(length))
        else:
            resp.body = await reader.read()  # close-delimited (RFC 9112 §6.3 rule 8)
    return resp


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            break
        parts.append(await reader.readexactly(size))
        assert await reader.readexactly(2) == b"\r\n", "chunk not followed by CRLF"
    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailer section
        pass
    return b"".join(parts)


async def read_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until the peer closes (a reset counts as a close); bounded by the timeout."""
    chunks: list[bytes] = []
    async with asyncio.timeout(TIMEOUT):
        with contextlib.suppress(ConnectionResetError):
            while data := await reader.read(1 << 16):
                chunks.append(data)
    return b"".join(chunks)


async def exchange(port: int, data: bytes, *, count: int = 1, method: str = "GET") -> list[Response]:
    """Send ``data`` in one write on a fresh connection and read ``count`` responses."""
    async with connect(port) as (reader, writer):
        writer.write(data)
        return [await read_response(reader, method=method) for _ in range(count)]
