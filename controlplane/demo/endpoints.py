"""The two ends of a pod test connection, run as processes inside pods.

``serve LABEL LOOP PORT...`` listens on every PORT over IPv4 and IPv6 and answers each connection
with one line: the label, the local address the connection arrived on, and its original
destination as ``meshproxy.listener.original_dst`` recovers it (``none`` when not redirected),
read from the socket a transport exposes (LOOP: ``uvloop`` or ``asyncio``), as the proxy
will. It prints ``ready`` once
every port is bound. ``dial HOST PORT`` connects, prints the line it got, and exits.
Depends only on the standard library and ``original_dst``.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvloop

from meshproxy.listener.original_dst import original_dst

DIAL_TIMEOUT = 10.0


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(label: str, ports: list[int]) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        local = sock.getsockname()
        recovered = original_dst(sock)
        original = _address(*recovered) if recovered else "none"
        writer.write(f"{label} local={_address(local[0], local[1])} original={original}\n".encode())
        await writer.drain()
        writer.close()

    servers = []
    for port in ports:
        servers.append(await asyncio.start_server(answer, "0.0.0.0", port))
        six = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        six.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        six.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        six.bind(("::", port))
        servers.append(await asyncio.start_server(answer, sock=six))
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def dial(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=DIAL_TIMEOUT) as sock:
        return sock.makefile("r").readline().strip()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        loop_factory = uvloop.new_event_loop if sys.argv[3] == "uvloop" else asyncio.new_event_loop
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(sys.argv[2], [int(p) for p in sys.argv[4:]]))
    else:
        print(dial(sys.argv[2], int(sys.argv[3])))
