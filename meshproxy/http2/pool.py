"""Multiplexed HTTP/2 connection pools, one per upstream host and routing priority.

Owns, for each (cluster, host, routing priority), the HTTP/2 connections in use and the streams
waiting for a slot: a stream goes to the first connection with capacity (the peer's
``max_concurrent_streams`` minus its open streams); when every connection is saturated or
going away, a new connection is opened, and waiting streams are dispatched as slots free up
or the new connection's SETTINGS arrive. A waiting stream counts as a pending request
(``max_pending_requests``: beyond it, 503 ``UO``), and a new connection is opened only within
``max_connections``. Idle connections close after the cluster's ``idle_timeout``. Connection
establishment (TCP, TLS) is ``ClusterRuntime.open_connection``. As in Envoy, each routing
priority has its own pool: its connections count against that priority's ``max_connections``
and carry only its streams (see ``upstream/cluster.py`` for why).

The pools live in a registry keyed by ``Host`` and the priority's ``ResourceManager`` (a host
kept across a configuration swap keeps its pools, and the managers are carried with it) because
``upstream/cluster.py`` has no slot for them yet; see docs/http2.md.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from meshproxy.hcm.context import OVERFLOW_PENDING
from meshproxy.http2.upstream import H2Upstream
from meshproxy.upstream.cluster import connect_failure

if TYPE_CHECKING:
    from meshproxy.config.model import Http2Options
    from meshproxy.http2.stream import H2Stream
    from meshproxy.upstream.breaker import ResourceManager
    from meshproxy.upstream.cluster import ClusterRuntime, Host

# A stream waits at most this many per connection being opened before another is opened
# (the new connection's real limit is known only once its SETTINGS arrive).
ASSUMED_STREAMS = 100


class H2Pool:
    def __init__(self, cluster: ClusterRuntime, host: Host, resources: ResourceManager) -> None:
        self.cluster = cluster
        self.host = host
        self.resources = resources  # the routing priority of its streams and connections
        self.conns: list[H2Upstream] = []
        self.waiters: deque[H2Stream] = deque()
        self.connecting = 0

    @property
    def options(self) -> Http2Options:
        h2 = self.cluster.config.http2
        assert h2 is not None
        return h2

    @property
    def max_streams(self) -> int:
        return self.options.max_concurrent_streams

    def request(self, stream: H2Stream) -> None:
        for conn in self.conns:
            if conn.capacity() > 0:
                stream.attach(conn)
                return
        # No free stream slot: the stream waits as a pending request (max_pending_requests).
        if not self.cluster.pend(stream.x.resources):
            stream.local_reply(OVERFLOW_PENDING)
            return
        self.waiters.append(stream)
        if self.connecting * ASSUMED_STREAMS < len(self.waiters):
            self._connect()

    def cancel(self, stream: H2Stream) -> None:
        try:
            self.waiters.remove(stream)
        except ValueError:
            return
        self.cluster.unpend(stream.x.resources)

    def _take_waiter(self) -> H2Stream:
        stream = self.waiters.popleft()
        self.cluster.unpend(stream.x.resources)
        return stream

    def _connect(self) -> None:
        if not self.cluster.can_connect(self.resources):
            # max_connections reached: the waiters wait for a slot on an open connection.
            if not self.conns and not self.connecting:
                self._fail_waiters("upstream overflow: max_connections")
            return
        self.connecting += 1
        task = self.cluster.open_connection(self.host, lambda: H2Upstream(self), self.resources)
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[H2Upstream]) -> None:
        self.connecting -= 1
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            reason = connect_failure(exc)
            if not self.connecting:
                self._fail_waiters(reason)
            return
        conn = task.result()
        if not conn.closed:
            self.conns.append(conn)
            if conn.ready:
                # The server's SETTINGS came before this callback: ``released`` ran while this
                # connection still counted as connecting, so it opened no other one for the
                # streams its limit left waiting; dispatch (and connect) now.
                self.released(conn)
            elif not conn.streams:  # its first streams may have ended before this callback ran
                self._arm_idle(conn)
        # Streams are dispatched when the server's SETTINGS arrive (``released``).

    def _fail_waiters(self, reason: str) -> None:
        waiters, self.waiters = self.waiters, deque()
        for stream in waiters:
            self.cluster.unpend(stream.x.resources)
            stream.upstream_failed(reason.encode())

    def released(self, conn: H2Upstream) -> None:
        """A slot may have freed on ``conn`` (stream done, SETTINGS changed): dispatch waiters."""
        waiters = self.waiters
        while waiters and conn.capacity() > 0:
            self._take_waiter().attach(conn)
        if waiters and not self.connecting:
            self._connect()
        if not conn.streams and conn in self.conns:
            self._arm_idle(conn)

    def _arm_idle(self, conn: H2Upstream) -> None:
        conn.idle_since = conn.loop.time()
        timeout = self.cluster.config.idle_timeout
        # One timer per connection, not one per request that left it idle (those piled up for
        # the whole timeout: an hour of serial traffic held millions of them).
        if timeout > 0 and conn.idle_timer is None:
            conn.idle_timer = conn.loop.call_later(timeout, self._idle_check, conn)

    def _idle_check(self, conn: H2Upstream) -> None:
        conn.idle_timer = None
        if conn.streams or conn.closed:
            return  # busy: ``released`` arms a new timer when it is idle again
        timeout = self.cluster.config.idle_timeout
        idle = conn.loop.time() - conn.idle_since
        if idle >= timeout - 0.01:
            self.cluster.stats.upstream_cx_idle_timeout += 1
            self.lost(conn)
            conn.close()
        elif timeout > 0:  # it was busy meanwhile: wait out the rest of the current idle spell
            conn.idle_timer = conn.loop.call_later(timeout - idle, self._idle_check, conn)

    def lost(self, conn: H2Upstream) -> None:
        """``conn`` takes no new streams (closed or GOAWAY)."""
        if conn in self.conns:
            self.conns.remove(conn)
        if self.waiters and not self.connecting:
            self._connect()


_POOLS: dict[tuple[Host, ResourceManager], H2Pool] = {}


def pool_for(cluster: ClusterRuntime, host: Host, resources: ResourceManager) -> H2Pool:
    """The pool of ``host`` for the routing priority whose breakers are ``resources``."""
    key = (host, resources)
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = H2Pool(cluster, host, resources)
    else:
        pool.cluster = cluster  # the cluster config may have been swapped; the host kept
    return pool
