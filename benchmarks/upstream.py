"""The load upstream: a small, fast HTTP/1.1 keep-alive server answering every request with 64 bytes.

Owns the server every benchmark path ends at, runnable as its own (pinned) process:
``python -m benchmarks.upstream --port N [--stall-ms 100 --stall-every-ms 1000]``. With a stall it
holds every response for ``stall-ms`` once every ``stall-every-ms`` (answering the held ones when
the stall ends), which is what the open-loop validation needs. Depends on httptools and, when
installed, uvloop; never on meshproxy, so it measures the same on every branch.

Per connection it parses with httptools (pipelined requests included) and writes the responses
produced by one read in a single ``write``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import httptools

from benchmarks.system import loop_factory

BODY = b"x" * 63 + b"\n"
_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(BODY)
RESPONSE = _HEAD + b"\r\n" + BODY
RESPONSE_CLOSE = _HEAD + b"Connection: close\r\n\r\n" + BODY


class Stall:
    """While ``active``, responses wait in ``held`` and go out together when the stall ends."""

    __slots__ = ("active", "held")

    def __init__(self) -> None:
        self.active = False
        self.held: list[tuple[asyncio.Transport, bytes, bool]] = []

    def start(self, loop: asyncio.AbstractEventLoop, stall_s: float, every_s: float) -> None:
        self.active = True
        loop.call_later(stall_s, self.end)
        loop.call_later(every_s, self.start, loop, stall_s, every_s)

    def end(self) -> None:
        self.active = False
        held, self.held = self.held, []
        for transport, data, close in held:
            if not transport.is_closing():
                transport.write(data)
                if close:
                    transport.close()


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse requests, answer each with ``RESPONSE``."""

    __slots__ = ("_close", "_out", "_parser", "_stall", "_transport")

    def __init__(self, stall: Stall) -> None:
        self._stall = stall
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._out: list[bytes] = []
        self._close = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            transport.close()
            return
        if not self._out:
            return
        payload = b"".join(self._out)
        self._out.clear()
        if self._stall.active:
            self._stall.held.append((transport, payload, self._close))
            return
        transport.write(payload)
        if self._close:
            transport.close()

    def on_message_complete(self) -> None:
        if self._parser.should_keep_alive():
            self._out.append(RESPONSE)
        else:
            self._out.append(RESPONSE_CLOSE)
            self._close = True


async def serve(host: str, port: int, stall_ms: int, stall_every_ms: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stall = Stall()
    server = await loop.create_server(
        lambda: UpstreamProtocol(stall), host, port, backlog=4096, reuse_address=True
    )
    if stall_ms > 0 and stall_every_ms > 0:
        loop.call_later(stall_every_ms / 1000, stall.start, loop, stall_ms / 1000, stall_every_ms / 1000)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    await stop
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stall-ms", type=int, default=0, help="hold all responses this long ...")
    parser.add_argument("--stall-every-ms", type=int, default=0, help="... once every this many ms")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(args.host, args.port, args.stall_ms, args.stall_every_ms))


if __name__ == "__main__":
    main()
