"""The supervisor's channel to one worker: length-prefixed pickled messages on a socketpair.

Owns the framing (a 4-byte big-endian length, then a pickle) and its bound: a frame longer than
``MAX_FRAME`` is refused on both ends, so a confused peer cannot make the other allocate
without limit. Both ends are this program (the supervisor spawned the worker and handed it one
end of the pair), which is why pickle is acceptable here and nowhere else. One request, then
its reply: the supervisor serialises requests per worker (``Channel.ask``). The messages are
``Start`` and those ``worker.py`` lists. Must not depend on the data plane (the supervisor
imports this, and need not load the request path).
"""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import struct
from typing import Any

from meshproxy.config.model import Config
from meshproxy.sidecar.lifecycle import Termination

# The largest message: a whole compiled configuration of a big mesh fits with room to spare.
MAX_FRAME = 256 * 1024 * 1024
_LENGTH = struct.Struct(">I")


@dataclasses.dataclass(frozen=True, slots=True)
class Start:
    """A worker's first message: who it is, what it runs, how it ends, how much it logs."""

    index: int
    config: Config
    termination: Termination
    log_level: str


class ChannelError(Exception):
    """The peer went away, or sent a frame over ``MAX_FRAME``."""


async def send(writer: asyncio.StreamWriter, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > MAX_FRAME:
        raise ChannelError(f"message of {len(data)} bytes exceeds the {MAX_FRAME}-byte frame limit")
    writer.write(_LENGTH.pack(len(data)) + data)
    try:
        await writer.drain()
    except (ConnectionError, RuntimeError) as exc:
        raise ChannelError(f"peer gone: {exc}") from exc


async def receive(reader: asyncio.StreamReader) -> Any:
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if length > MAX_FRAME:
            raise ChannelError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
        return pickle.loads(await reader.readexactly(length))
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise ChannelError("peer gone") from exc


class Channel:
    """The supervisor's end: ``ask`` sends a request and waits (bounded) for its reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._lock = asyncio.Lock()
        # Set when an exchange ended half-way (timeout, cancel, peer gone): a late reply would
        # answer the next request, so the channel is not used again.
        self.broken = False

    async def ask(self, request: Any, timeout: float) -> Any:
        """The reply to ``request``; raises ChannelError when the worker is gone, or did not
        answer within ``timeout`` seconds (the channel is then ``broken``)."""
        async with self._lock:
            if self.broken:
                raise ChannelError("channel broken by an earlier exchange")
            try:
                async with asyncio.timeout(timeout):
                    await send(self.writer, request)
                    return await receive(self.reader)
            except TimeoutError as exc:
                self.broken = True
                raise ChannelError(f"no answer within {timeout}s") from exc
            except BaseException:
                self.broken = True
                raise

    def close(self) -> None:
        self.writer.close()
