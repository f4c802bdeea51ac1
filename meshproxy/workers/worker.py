"""One worker process of ``meshproxy run --concurrency N``: a ``Server`` the supervisor drives.

Started as ``python -m meshproxy.workers.worker FD``, FD being its end of a socketpair to the
supervisor (``channel.py``). The first message is ``Start``: the configuration with the admin
and ``dynamic_resources`` taken out (both are the supervisor's) and listener ports resolved
(the supervisor reserved them), the termination settings and the log level. The ``Server``
binds each listener with SO_REUSEPORT, and replies ``("started", pid)`` or
``("failed", reason)``. Then it answers requests, one at a time:

- ``("apply", Config)`` → ``("ok", None)`` or ``("error", problems)``: ``Server.apply``, with
  listeners equal to the running ones kept as the same objects (a pickled copy is never the
  same object, and a listener that is not the same object would be replaced);
- ``("admin", method, path)`` → ``("ok", answer)``: this worker's own admin answer;
- ``("stats",)`` → ``("ok", (Store, OverloadStats))``.

It ends as a single-process proxy does, in the sidecar order of ``server.py``: on SIGTERM (the
supervisor forwards its own), and when the channel closes (the supervisor is gone). It runs in
a session of its own, so a terminal's Ctrl-C reaches the supervisor only.
Must not be imported by the single-process path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sys
from typing import Any

from meshproxy import malloc
from meshproxy.cli import new_event_loop, settle_heap
from meshproxy.config.model import Config
from meshproxy.errors import ConfigError
from meshproxy.server import Server
from meshproxy.workers import channel


def interned(running: Config, new: Config) -> Config:
    """``new`` with each listener equal to the running one of its name replaced by that one."""
    live = {ln.name: ln for ln in running.listeners}
    return dataclasses.replace(
        new, listeners=tuple(live[ln.name] if live.get(ln.name) == ln else ln for ln in new.listeners)
    )


async def _answer(server: Server, request: tuple[Any, ...]) -> tuple[str, Any]:
    kind = request[0]
    if kind == "apply":
        try:
            await server.apply(interned(server.config, request[1]))
        except ConfigError as exc:
            return "error", exc.problems
        return "ok", None
    if kind == "admin":
        return "ok", server.admin.handle(request[1], request[2])
    if kind == "stats":
        return "ok", (server.store, server.overload.stats)
    return "error", [f"unknown request {kind!r}"]


async def _requests(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer the supervisor until it goes away."""
    while True:
        try:
            request = await channel.receive(reader)
            await channel.send(writer, await _answer(server, request))
        except channel.ChannelError:
            return


async def serve(sock: socket.socket) -> int:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    start: channel.Start = await channel.receive(reader)
    logging.basicConfig(
        level=getattr(logging, start.log_level.upper()),
        format=f"%(asctime)s %(levelname)s %(name)s[worker {start.index}]: %(message)s",
        stream=sys.stderr,
    )
    server = Server(start.config, termination=start.termination, reuse_port=True)
    try:
        await server.start()
    except OSError as exc:
        await channel.send(writer, ("failed", str(exc)))
        return 3
    settle_heap()
    await channel.send(writer, ("started", os.getpid()))
    requests = asyncio.create_task(_requests(server, reader, writer))
    serving = asyncio.create_task(server.serve_forever())
    await asyncio.wait((requests, serving), return_when=asyncio.FIRST_COMPLETED)
    if not serving.done():  # the supervisor is gone: end as on SIGTERM
        logging.getLogger("meshproxy").warning("supervisor gone; shutting down")
        server.terminate()
        await serving
    requests.cancel()
    writer.close()
    return 0


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[0]))
    malloc.limit_arenas()
    loop = new_event_loop()
    try:
        return loop.run_until_complete(serve(sock))
    finally:
        # A signal the supervisor forwards while this ends (a second SIGTERM) must not turn a
        # clean exit into death by signal once the loop's handlers are gone.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        loop.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
