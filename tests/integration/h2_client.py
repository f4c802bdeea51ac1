"""A raw HTTP/2 test client on asyncio streams and the h2 library (frames under test control).

Owns what the HTTP/2 tests send that no well-behaved client would: arbitrary header sets
(a ``grpc-timeout`` without a client deadline), resets, floods of SETTINGS, PING,
CONTINUATION and RST_STREAM frames; and reading events until a condition (GOAWAY, a stream's end).
"""

from __future__ import annotations

import asyncio
from typing import Any

from h2 import events as ev
from h2.config import H2Configuration
from h2.connection import H2Connection


class RawH2:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.events: list[ev.Event] = []
        self.closed = False

    @classmethod
    async def open(cls, port: int) -> RawH2:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        client.h2.initiate_connection()
        await client.flush()
        return client

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def write_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def request(
        self, path: str = "/", *, end: bool = True, extra: list[tuple[str, str]] | None = None
    ) -> int:
        sid = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "POST" if not end else "GET"),
            (":scheme", "http"),
            (":authority", "test"),
            (":path", path),
        ]
        headers += extra or []
        self.h2.send_headers(sid, [(k.encode(), v.encode()) for k, v in headers], end_stream=end)
        return sid

    async def read_until(self, predicate: Any, timeout: float = 5.0) -> list[ev.Event]:
        """Read and collect events until ``predicate(events)`` holds or the connection ends."""
        async with asyncio.timeout(timeout):
            while not predicate(self.events):
                data = await self.reader.read(65536)
                if not data:
                    self.closed = True
                    break
                try:
                    self.events += self.h2.receive_data(data)
                except Exception:
                    self.closed = True
                    break
                await self.flush()
        return self.events

    def goaway(self) -> ev.ConnectionTerminated | None:
        return next((e for e in self.events if isinstance(e, ev.ConnectionTerminated)), None)

    def headers_of(self, sid: int) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for e in self.events:
            if isinstance(e, (ev.ResponseReceived, ev.TrailersReceived)) and e.stream_id == sid:
                out.update(dict(e.headers))
        return out

    def ended(self, sid: int) -> bool:
        return any(
            isinstance(e, (ev.StreamEnded, ev.StreamReset)) and e.stream_id == sid for e in self.events
        )

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
