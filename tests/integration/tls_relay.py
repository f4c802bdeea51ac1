"""A TCP relay on loopback that reads the key-exchange group each TLS server chooses.

Owns `GroupRelay`: it accepts on ``127.0.0.1:0``, connects each client to the target, copies
bytes both ways untouched, and parses the server's first handshake message with
``tests/tls_hello.py``: the ServerHello's selected group, e.g. 0x11EC for X25519MLKEM768.
This is evidence from the wire for a TLS stack that cannot say itself what it negotiated
(grpcio's BoringSSL exposes no group). A HelloRetryRequest is recorded as such.

Must not depend on: any TLS library (the parse is by hand, on the bytes that crossed).
"""

from __future__ import annotations

import asyncio
import contextlib

from tls_hello import Hello, first_handshake_message, parse_hello


class GroupRelay:
    """Relays to ``target_port``; ``chosen`` holds one entry per connection whose ServerHello crossed."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.chosen: list[Hello] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> GroupRelay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._relay(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(self._copy(reader, up_writer, False), self._copy(up_reader, writer, True))
        finally:
            writer.close()
            up_writer.close()

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watch: bool) -> None:
        seen = b""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if watch:
                    seen += data
                    message = first_handshake_message(seen)
                    if message is not None:
                        self.chosen.append(parse_hello(message))
                        watch, seen = False, b""
                writer.write(data)
                await writer.drain()
        writer.close()
