"""Istio's status ports: ``/healthz/ready`` (15021) and ``/stats/prometheus`` (15090).

Owns serving the admin's readiness and Prometheus answers (``Admin.readiness``,
``Admin.prometheus``: the same answer as the admin's ``/ready`` and ``/stats/prometheus``) on
every interface, where the kubelet probes the pod's IP and Prometheus scrapes it, while the
admin itself stays on loopback. Each port answers its one path, GET and HEAD only (405 for other
methods, with ``Allow``; 404 for other paths), through the bounded ``Endpoint`` (request size, timeout), and
outside the overload manager's reach (its admission is the data plane's). Both ports may be one.
Must not depend on the data plane.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

from meshproxy.admin.endpoint import Answer, Endpoint, Handler, method_not_allowed

READY_PATH = "/healthz/ready"
PROMETHEUS_PATH = "/stats/prometheus"

Answerer = Callable[[], Answer | Awaitable[Answer]]


class StatusSource(Protocol):
    """What the status ports answer from: the admin (``admin/server.py``), or with workers the
    supervisor's admin (``workers/admin.py``), whose answers come later (awaitables)."""

    def readiness(self) -> Answer | Awaitable[Answer]: ...

    def prometheus(self) -> Answer | Awaitable[Answer]: ...


def all_interfaces(port: int) -> socket.socket:
    """A listening socket on every interface: one dual-stack IPv6 socket (IPv4 arrives mapped),
    or IPv4 alone where the kernel has no IPv6."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        else:
            sock.bind(("0.0.0.0", port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class StatusPorts:
    """The readiness port and the Prometheus port (either may be None: not served)."""

    def __init__(self, admin: StatusSource, ready_port: int | None, prometheus_port: int | None) -> None:
        # (port, paths it serves): one port number given twice is one port; 0 is a fresh one each time.
        self.routes: list[tuple[int, dict[str, Answerer]]] = []
        for port, path, answer in (
            (ready_port, READY_PATH, admin.readiness),
            (prometheus_port, PROMETHEUS_PATH, admin.prometheus),
        ):
            if port is None:
                continue
            shared = next((paths for p, paths in self.routes if p == port and port != 0), None)
            if shared is None:
                self.routes.append((port, {path: answer}))
            else:
                shared[path] = answer
        self.servers: dict[str, asyncio.Server] = {}  # by path

    async def start(self) -> None:
        """Bind every port (raises OSError, binding none, when one cannot be bound)."""
        loop = asyncio.get_running_loop()
        sockets: list[tuple[socket.socket, dict[str, Answerer]]] = []
        try:
            for port, paths in self.routes:
                try:
                    sockets.append((all_interfaces(port), paths))
                except OSError as exc:
                    raise OSError(
                        exc.errno, f"status port {port} ({', '.join(paths)}): {exc.strerror}"
                    ) from exc
        except OSError:
            for sock, _ in sockets:
                sock.close()
            raise
        for sock, paths in sockets:
            srv = await loop.create_server(partial(Endpoint, _handler(paths)), sock=sock)
            for path in paths:
                self.servers[path] = srv

    def port(self, path: str) -> int:
        """The port ``path`` is served on (port 0 resolved)."""
        return int(self.servers[path].sockets[0].getsockname()[1])

    def close(self) -> None:
        for srv in set(self.servers.values()):
            srv.close()


def _handler(paths: dict[str, Answerer]) -> Handler:
    def handle(method: bytes, target: str) -> Answer | Awaitable[Answer]:
        answer = paths.get(target.partition("?")[0])
        if answer is None:
            return 404, b"not found; this port serves " + " ".join(paths).encode() + b"\n", b"text/plain"
        if method not in (b"GET", b"HEAD"):
            return method_not_allowed(b"GET", b"HEAD")
        return answer()

    return handle
