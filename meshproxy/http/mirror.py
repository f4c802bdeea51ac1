"""Request mirroring's I/O: each copy ``hcm/mirror.py`` decided goes out on a connection of its own.

Owns ``send``: for a forwarded request whose body is complete, the copies are written, each on
a fresh connection to its mirror host (TLS when the cluster has it: ``ClusterRuntime.
open_connection``), with ``connection: close``; the answer is read and dropped (at most
``_ANSWER_LIMIT`` bytes, within the route's timeout, else the connection is aborted); the
breakers admitted for it are released when the connection ends. Nothing here touches the
primary request: a slow, failing or refusing mirror costs it nothing but the copy's bytes.
Both codecs' streams call ``send``. Holds no policy.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, cast

from meshproxy.hcm.mirror import copies

if TYPE_CHECKING:
    from meshproxy.hcm.exchange import Exchange
    from meshproxy.upstream.breaker import ResourceManager
    from meshproxy.upstream.cluster import ClusterRuntime

_ANSWER_LIMIT = 64 * 1024  # the mirror's answer is read only to end the exchange cleanly
_DEFAULT_TIMEOUT = 15.0


def send(
    x: Exchange, method: bytes, authority: bytes, url: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Send the copies of ``x``'s request (its body complete) that ``hcm/mirror.py`` admits."""
    timeout = x.plan.timeout or _DEFAULT_TIMEOUT  # type: ignore[union-attr]  # mirrors imply a plan
    for cluster, host, rm, data in copies(x, method, authority, url, headers):
        task = cluster.open_connection(host, functools.partial(_Copy, cluster, rm, data, timeout), rm)
        task.add_done_callback(functools.partial(_connected, cluster, rm))


def _connected(cluster: ClusterRuntime, rm: ResourceManager, task: asyncio.Task[_Copy]) -> None:
    if task.cancelled() or task.exception() is not None:  # the cluster counted the failure
        cluster.request_done(rm, False, b"")


class _Copy(asyncio.Protocol):
    """One copy's connection: write it, read the answer away, close."""

    def __init__(self, cluster: ClusterRuntime, rm: ResourceManager, data: bytes, timeout: float) -> None:
        self.cluster = cluster
        self.rm = rm
        self.data = data
        self.timeout = timeout
        self.received = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # plain TCP, or the TLS engine's
        self.transport.write(self.data)
        self.data = b""
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > _ANSWER_LIMIT:
            self.transport.abort()

    def eof_received(self) -> bool:
        return False  # the answer ended (connection: close): close our side

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.cluster.connection_closed(self.rm)
        self.cluster.request_done(self.rm, False, b"")
