"""Accepted connections have Nagle's algorithm off, on uvloop and on the stdlib loop alike.

A response relayed from a multiplexed upstream (HTTP/2 or HTTP/3) is written as its head, then
its body; with Nagle on, the body waited for the client's delayed ACK (40 ms on Linux). The
stdlib loop disables Nagle only on sockets whose ``proto`` is IPPROTO_TCP, so the listening
socket is made with it (``listener/runtime.py``'s ``bind_socket``).
"""

from __future__ import annotations

import asyncio
import socket

from .harness import bootstrap, cluster, eventually, http_listener, route, running_proxy


async def test_accepted_connections_have_nodelay() -> None:
    async with running_proxy(
        bootstrap([http_listener([route("/", "c", timeout="0.2s")])], [cluster("c", 9)])
    ) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port())
        try:
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            listener = p.server.listeners["http"]
            await eventually(lambda: bool(listener.connections), what="the connection reached its codec")
            (conn,) = listener.connections
            sock = conn.transport.get_extra_info("socket")  # type: ignore[attr-defined]
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            writer.close()
