"""TCP keepalive on upstream connections: Envoy's ``upstream_connection_options.tcp_keepalive``.

Owns the two ways the setting reaches a connection: socket options on the data path's sockets
(SO_KEEPALIVE, TCP_KEEPCNT / TCP_KEEPIDLE / TCP_KEEPINTVL when given), and, for the xDS
cluster, whose connection is gRPC's own and takes no socket options, gRPC's HTTP/2 keepalive
pings with the same purpose (a dead controlplane found while the stream is idle). Those pings
are never sent more often than every 300 s: gRPC servers' default enforcement refuses more
frequent ones (GOAWAY too_many_pings), which would turn a liveness check into a reconnect loop.
Must not depend on the request path.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from meshproxy.config.model import TcpKeepalive

# Linux's defaults (tcp(7)), for what the configuration leaves out.
_KERNEL_TIME, _KERNEL_INTERVAL, _KERNEL_PROBES = 7200, 75, 9
GRPC_MIN_PING_INTERVAL = 300  # seconds: grpc's default min_ping_interval_without_data / MinTime

_OPTIONS = (
    ("probes", getattr(socket, "TCP_KEEPCNT", None)),
    ("time", getattr(socket, "TCP_KEEPIDLE", None)),
    ("interval", getattr(socket, "TCP_KEEPINTVL", None)),
)


def set_keepalive(transport: asyncio.BaseTransport, keepalive: TcpKeepalive) -> None:
    """Turn keepalive on for ``transport``'s socket (a TLS transport passes its socket through)."""
    sock: socket.socket | None = transport.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for field, option in _OPTIONS:
        value = getattr(keepalive, field)
        if value is not None and option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def grpc_keepalive_options(keepalive: TcpKeepalive) -> list[tuple[str, Any]]:
    """gRPC channel arguments for the xDS cluster: a ping after ``time`` idle seconds (at least
    GRPC_MIN_PING_INTERVAL), the connection dropped when no answer comes within what the
    probes would have waited (interval times probes)."""
    time = max(keepalive.time or _KERNEL_TIME, GRPC_MIN_PING_INTERVAL)
    wait = (keepalive.interval or _KERNEL_INTERVAL) * (keepalive.probes or _KERNEL_PROBES)
    return [("grpc.keepalive_time_ms", time * 1000), ("grpc.keepalive_timeout_ms", wait * 1000)]
