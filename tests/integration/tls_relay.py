"""A TCP relay on loopback that reads the key-exchange group each TLS server chooses.

Owns `GroupRelay`: it accepts on ``127.0.0.1:0``, connects each client to the target, copies
bytes both ways untouched, and parses the server's first handshake message (ServerHello,
RFC 8446 4.1.3) for its ``key_share`` extension (4.2.8): the selected group, e.g. 0x11EC for
X25519MLKEM768. This is evidence from the wire for a TLS stack that cannot say itself what it
negotiated (grpcio's BoringSSL exposes no group). A HelloRetryRequest is recorded as such.

Must not depend on: any TLS library (the parse is by hand, on the bytes that crossed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass

X25519MLKEM768 = 0x11EC
_KEY_SHARE = 0x0033
# A HelloRetryRequest is a ServerHello with this random (RFC 8446 4.1.3).
_HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()


@dataclass(frozen=True, slots=True)
class Chosen:
    group: int
    retry: bool  # a HelloRetryRequest asked for this group


def server_hello_group(data: bytes) -> Chosen | None:
    """The group of the ServerHello at the start of ``data`` (TLS records from the server), or
    None while the first record is incomplete. Raises ValueError if it is not a ServerHello."""
    if len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
        return None
    if data[0] != 0x16:
        raise ValueError(f"the server's first record is of type {data[0]}, not a handshake")
    hello = data[5 : 5 + int.from_bytes(data[3:5], "big")]
    if hello[0] != 0x02:
        raise ValueError(f"the server's first handshake message is of type {hello[0]}, not ServerHello")
    random = hello[6:38]
    at = 38
    at += 1 + hello[at]  # legacy_session_id_echo
    at += 2 + 1  # cipher_suite, legacy_compression_method
    end = at + 2 + int.from_bytes(hello[at : at + 2], "big")
    at += 2
    while at < end:
        kind, size = int.from_bytes(hello[at : at + 2], "big"), int.from_bytes(hello[at + 2 : at + 4], "big")
        if kind == _KEY_SHARE:
            return Chosen(int.from_bytes(hello[at + 4 : at + 6], "big"), random == _HRR_RANDOM)
        at += 4 + size
    raise ValueError("the ServerHello has no key_share extension (not TLS 1.3?)")


class GroupRelay:
    """Relays to ``target_port``; ``chosen`` holds one entry per connection whose ServerHello crossed."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.chosen: list[Chosen] = []
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
                    chosen = server_hello_group(seen)
                    if chosen is not None:
                        self.chosen.append(chosen)
                        watch, seen = False, b""
                writer.write(data)
                await writer.drain()
        writer.close()
