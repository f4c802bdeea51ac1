"""A pod's unmodified application and its clients, run as processes inside pods.

``serve VERSION`` runs what a workload pod holds, every server on all interfaces (as a
container's application does; the capture decides who reaches it):

- HTTP/1.1 on 8080 (keep-alive): each answer is a JSON echo of what the application saw: its
  version, the method, path and headers (``x-forwarded-client-cert`` among them, when its
  sidecar vouched for a caller), and how many connections so far opened with a TLS record
  (``tls_connections``: byte 0x16 first; an application behind its sidecar must see none);
  the ``x-version`` header says the version for ``apps.send``'s tally.
- gRPC on 9090 (grpcio): ``/pods.Echo/Say`` answers ``VERSION:REQUEST`` (bytes, no protobuf).
- a raw TCP echo on 7000.

It prints ``ready`` once every port is bound. On SIGTERM it behaves as a well-written
application does in a terminating pod: it keeps answering until no HTTP request came for
``QUIET`` seconds (its callers have moved away), bounded by ``GRACE``, prints
``{"served": N}`` and exits 0.

Clients: ``grpc HOST PORT MESSAGE`` and ``tcp HOST PORT MESSAGE`` print the answer; ``load HOST
PORT CONNECTIONS`` sends GETs over keep-alive connections (``apps.send_until``), prints
``started`` after its first answer and, once a line arrives on stdin (or after ``GRACE``), its
tally as JSON. Must not depend on: the proxy or the controlplane (it is the application).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time

import grpc

from controlplane.demo.apps import send, send_until

HTTP_PORT, GRPC_PORT, TCP_PORT = 8080, 9090, 7000
GRPC_METHOD = "/pods.Echo/Say"
QUIET = 0.5
GRACE = 20.0
CLIENT_TIMEOUT = 10.0


class _State:
    def __init__(self, version: str) -> None:
        self.version = version
        self.served = 0
        self.tls_connections = 0
        self.last_request = time.monotonic()


class _Http(asyncio.Protocol):
    def __init__(self, state: _State) -> None:
        self.state = state
        self.buf = b""
        self.first = True
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.first and data[:1] == b"\x16":
            self.state.tls_connections += 1
        self.first = False
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = [*lines[0].split(" "), "", "", ""][:3]
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
            self.state.served += 1
            self.state.last_request = time.monotonic()
            seen = {
                "version": self.state.version,
                "method": method,
                "path": path,
                "headers": headers,
                "tls_connections": self.state.tls_connections,
            }
            body = json.dumps(seen).encode() + b"\n"
            version = self.state.version.encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-version: %b\r\n"
                b"content-length: %d\r\n\r\n%b" % (version, len(body), body)
            )


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def serve(version: str) -> None:
    state = _State(version)
    loop = asyncio.get_running_loop()
    http = await loop.create_server(lambda: _Http(state), "0.0.0.0", HTTP_PORT)
    echo = await asyncio.start_server(_echo, "0.0.0.0", TCP_PORT)

    async def say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return version.encode() + b":" + request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "pods.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"0.0.0.0:{GRPC_PORT}")
    await server.start()
    terminated = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, terminated.set)
    print("ready", flush=True)
    await terminated.wait()
    deadline = time.monotonic() + GRACE
    while time.monotonic() - state.last_request < QUIET and time.monotonic() < deadline:
        await asyncio.sleep(QUIET / 5)  # watching for requests to stop: nothing to await
    http.close()
    echo.close()
    await server.stop(None)
    print(json.dumps({"served": state.served}), flush=True)


async def call_grpc(host: str, port: int, message: str) -> str:
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        say = channel.unary_unary(GRPC_METHOD)
        answer: bytes = await say(message.encode(), timeout=CLIENT_TIMEOUT)
        return answer.decode()


def call_tcp(host: str, port: int, message: str) -> str:
    with socket.create_connection((host, port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(message.encode())
        sock.shutdown(socket.SHUT_WR)
        return sock.makefile("rb").read().decode()


async def load(host: str, port: int, connections: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    first = await send(host, port, host, 1, 1)
    if not first.failed:
        print("started", flush=True)
        loop.run_in_executor(None, sys.stdin.readline).add_done_callback(lambda _: stop.set())
        loop.call_later(GRACE, stop.set)
        rest = await send_until(host, port, host, connections, stop)
        first.versions.update(rest.versions)
        first.failed, first.first_error = rest.failed, rest.first_error
    tally = {"versions": dict(first.versions), "failed": first.failed, "first_error": first.first_error}
    print(json.dumps(tally), flush=True)


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "serve":
        asyncio.run(serve(sys.argv[2]))
    elif command == "grpc":
        print(asyncio.run(call_grpc(sys.argv[2], int(sys.argv[3]), sys.argv[4])))
    elif command == "tcp":
        print(call_tcp(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    elif command == "load":
        asyncio.run(load(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
