"""A bound listener: accepting connections, choosing a filter chain, draining.

Owns one listening socket and the connections it accepted (``accept.py`` takes each from
accept to its filter chain's protocol: original destination, hand-off, chain choice), the
idle sweep (keep-alive idle timeout, stream idle timeout, TCP idle timeout) and graceful
drain. The per-snapshot filter contexts are swapped as a whole; connections keep the context
they started with.

Also owns the life of each accepted socket before a codec has it (a *pre-connection*: listener
filters, TLS handshake, codec choice): its admission (``admission.py``, refused sockets closed
at once and counted by reason), the count of those in progress, and the release of its global
connection slot exactly once (when it is abandoned, or when the codec's connection closes).
A chain with a connection_limit filter admits each connection it is handed
(``meshproxy/connection_limit.py``): over the limit, the connection is closed unread (after the filter's
``delay``); an admitted one gives its place back exactly once, with its pre-connection slot
(``pre_closed``) or its codec connection (``connection_closed``).
The overload state reaches this listener's HTTP contexts here (``set_overload``), and its
``stop_accepting_connections`` parks the listening socket (the kernel's backlog holds what
arrives) until the state allows accepting again. Log lines an attacker can provoke go through
a ``LogLimiter``; the counters count every event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import socket
from collections.abc import Mapping, Sequence
from time import monotonic, time
from typing import TYPE_CHECKING, Any, Protocol

from meshproxy import tls as _tls  # its names load on first use: pyOpenSSL with the first TlsContext
from meshproxy.access_log import AccessLogs
from meshproxy.addresses import host_port
from meshproxy.config.model import (
    ConnectionLimit,
    FilterChain,
    FilterChainMatch,
    HttpConnectionManager,
    Listener,
    SocketAddress,
    TcpProxy,
)
from meshproxy.connection_limit import ChainLimit
from meshproxy.hcm.context import HttpContext
from meshproxy.hcm.identity import local_identity
from meshproxy.http.downstream import DownstreamConnection
from meshproxy.http.stream import Stream
from meshproxy.http2.downstream import H2Downstream
from meshproxy.http2.from_http1 import relay_over_http2
from meshproxy.http2.to_http1 import Http1Upstream
from meshproxy.listener.accept import ChainSelector
from meshproxy.listener.admission import Admission, Refusal
from meshproxy.listener.log_limit import LogLimiter
from meshproxy.overload.state import OverloadState
from meshproxy.rbac.runtime import RbacRuntime
from meshproxy.router.table import RouteTable
from meshproxy.stats import ListenerStats, Store
from meshproxy.tcp.proxy import TcpContext, TcpDownstream
from meshproxy.telemetry.istio import HttpReporter, TcpReporter
from meshproxy.tls.counts import count_handshake
from meshproxy.tls.errors import TlsError
from meshproxy.upstream.manager import ClusterManager

if TYPE_CHECKING:
    from meshproxy.telemetry.istio import IstioMetrics
    from meshproxy.tls.context import TlsContext
    from meshproxy.tls.engine import Negotiated
    from meshproxy.tracing.registry import Tracers

log = logging.getLogger("meshproxy.listener")

# Period of the deadline tick that enforces route timeouts of a second or more.
DEADLINE_TICK = 0.1

# Seconds an idle connection is given, once a drain starts, for a request already on the wire.
DRAIN_IDLE_GRACE = 0.2


class ChainContext(Protocol):
    """What the listener reads of a connection's filter-chain context."""

    connection_limit: ChainLimit | None


class Tracked(Protocol):
    """What the listener needs of every connection it tracks."""

    idle_since: float

    @property
    def ctx(self) -> ChainContext: ...

    def is_idle(self) -> bool: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def bind_socket(
    address: SocketAddress, ipv4_compat: bool = False, *, reuse_port: bool = False
) -> socket.socket:
    """A listening socket on ``address`` (raises OSError), for a runtime to ``start`` on later:
    an update binds every new listener before it changes anything. An IPv6 socket is IPv6 only
    unless ``ipv4_compat`` (Envoy's ``v6only = !ipv4_compat``), whatever the kernel's
    ``net.ipv6.bindv6only`` default; with it, one socket takes both families. ``reuse_port``:
    with SO_REUSEPORT, one socket per worker process (``meshproxy/workers/``) on the same
    address, the kernel spreading new connections over them."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(not ipv4_compat))
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address.host, address.port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = host_port(address.host, address.port)
        raise OSError(exc.errno, f"cannot bind {where}: {exc.strerror or exc}") from exc
    return sock


class ListenerRuntime:
    def __init__(
        self,
        config: Listener,
        stats: ListenerStats,
        store: Store,
        clusters: ClusterManager,
        access_logs: AccessLogs,
        rng: random.Random,
        admission: Admission,
        route_tables: Sequence[RouteTable] = (),
        peers: Mapping[str, ListenerRuntime] | None = None,
        tracers: Tracers | None = None,
        istio: IstioMetrics | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.stats = stats
        self.draining = False
        # A graceful drain's first phase: still accepting, every exchange in drain mode.
        self.graceful = False
        # The admin's /healthcheck/fail, until /healthcheck/ok (the server sets it on all).
        self.health_failed = False
        # The runtime that replaced this one: connections this one accepted late go there.
        self.successor: ListenerRuntime | None = None
        self.connections: set[Tracked] = set()
        self.server: asyncio.Server | None = None
        self._store = store
        self._clusters = clusters
        self._access_logs = access_logs
        self._rng = rng
        self._tracers = tracers  # the server's (HCM tracing); None: tracing configs are not run
        self._istio = istio  # the server's Istio series (istio.stats filters); None: not kept
        self.contexts: dict[int, HttpContext | TcpContext] = {}
        self.tls_contexts: dict[int, TlsContext] = {}
        self._drained: asyncio.Event | None = None
        self._bound: tuple[str, int] | None = None
        # Streams whose route timeout is kept coarsely (see Stream._arm_timer).
        self.deadlines: set[Stream] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.admission = admission
        # Pre-connections: accepted, admitted, not yet handed to a codec's connection.
        self.pending = 0
        # The listening socket while stop_accepting_connections holds (its backlog keeps filling).
        self._parked: socket.socket | None = None
        self._resuming: asyncio.Task[None] | None = None
        self._logs = LogLimiter(log)
        # connection_limit counters by (default chain?, match, limit): the same chain keeps its
        # count across updates; no two chains of a listener share a match.
        self._limits: dict[tuple[bool, FilterChainMatch, ConnectionLimit], ChainLimit] = {}
        # Every live listener of the process by name (the server's table): use_original_dst
        # hands a connection to the one bound to its original destination.
        self.peers: Mapping[str, ListenerRuntime] = peers if peers is not None else {}
        self.update(config, route_tables)

    def update(self, config: Listener, route_tables: Sequence[RouteTable] = ()) -> None:
        """Install a listener config (same address); existing connections keep their context.
        ``route_tables``: tables already built for route configurations of ``config`` (an xDS
        update builds a large one in slices, ``RouteTable.build``); the others are built here."""
        prebuilt = {id(table.config): table for table in route_tables}
        self.config = config
        contexts: dict[int, HttpContext | TcpContext] = {}
        tls_contexts: dict[int, TlsContext] = {}
        network_rbac: dict[int, RbacRuntime] = {}
        limits: dict[tuple[bool, FilterChainMatch, ConnectionLimit], ChainLimit] = {}
        chains = [(False, c) for c in config.filter_chains]
        if config.default_filter_chain is not None:
            chains.append((True, config.default_filter_chain))
        for default, chain in chains:
            ctx = contexts[id(chain)] = self._context(chain, prebuilt)
            if chain.tls is not None:
                tls_contexts[id(chain)] = _tls.TlsContext(chain.tls)
            if chain.rbac is not None:
                network_rbac[id(chain)] = RbacRuntime.counted(chain.rbac, self._store)
            if chain.connection_limit is not None:
                key = (default, chain.match, chain.connection_limit)
                limit = self._limits.get(key) or ChainLimit(
                    chain.connection_limit,
                    self._store.connection_limit_stats(chain.connection_limit.stat_prefix),
                )
                ctx.connection_limit = limits[key] = limit
        self.contexts = contexts
        self.tls_contexts = tls_contexts
        self.network_rbac = network_rbac  # envoy.filters.network.rbac by chain (id)
        self._limits = limits
        self._publish(self.admission.overload.state)

    def _context(self, chain: FilterChain, prebuilt: dict[int, RouteTable]) -> HttpContext | TcpContext:
        f = chain.filter
        if isinstance(f, HttpConnectionManager):
            ctx = HttpContext(
                f,
                prebuilt.get(id(f.route_config)) or RouteTable(f.route_config),
                self._clusters,
                self._store.http_stats(f.stat_prefix),
                self,
                self._access_logs.logger(f.access_logs),
                self._rng,
                monotonic(),
                scheme=b"https" if chain.tls is not None else b"http",
                local_identity=local_identity(chain.tls.certificate_chain) if chain.tls is not None else None,
                store=self._store,
            )
            ctx.to_http2 = relay_over_http2
            ctx.to_http1 = Http1Upstream
            outbound = self.config.traffic_direction == "OUTBOUND"
            if f.tracing is not None and self._tracers is not None:
                ctx.tracer = self._tracers.tracer(f.tracing, outbound)
            if f.istio_stats is not None and self._istio is not None:
                ctx.istio = HttpReporter(f.istio_stats, self._istio, not outbound, ctx.local_identity)
            return ctx
        assert isinstance(f, TcpProxy)
        tcp = TcpContext(
            f,
            self._clusters,
            self._store.tcp_stats(f.stat_prefix),
            self,
            self._access_logs.logger(f.access_logs),
            self._rng,
        )
        if chain.istio_stats is not None and self._istio is not None:
            ours = local_identity(chain.tls.certificate_chain) if chain.tls is not None else None
            outbound = self.config.traffic_direction == "OUTBOUND"
            tcp.istio = TcpReporter(chain.istio_stats, self._istio, not outbound, ours)
        return tcp

    async def start(self, sock: socket.socket | None = None) -> None:
        """Serve on ``sock`` (bound and listening, see ``bind_socket``/``handover_socket``), or
        bind the configured address."""
        loop = asyncio.get_running_loop()
        if sock is None:
            sock = bind_socket(self.config.address, self.config.ipv4_compat)
        self.server = await loop.create_server(self._accept, sock=sock, backlog=1024)
        log.info("listener %s on %s:%d", self.name, *self.bound_address())
        self._ticker = loop.create_task(self._deadline_tick())

    def set_overload(self, state: OverloadState) -> None:
        """A new overload state (the server subscribes every live listener): the HTTP contexts
        read it per request; accepting stops while ``state.accepting`` is False."""
        self._publish(state)
        if not state.accepting:
            if self.server is not None and self._parked is None and not self.draining:
                self._parked = self.handover_socket()
                self.server.close()
                log.warning("listener %s: not accepting connections (overload)", self.name)
        elif self._parked is not None and self._resuming is None:
            self._resuming = asyncio.get_running_loop().create_task(self._resume())

    def _publish(self, state: OverloadState) -> None:
        for ctx in self.contexts.values():
            if isinstance(ctx, HttpContext):
                ctx.overload = state

    async def _resume(self) -> None:
        try:
            sock, self._parked = self._parked, None
            if sock is None:
                return
            if self.draining:
                sock.close()
                return
            loop = asyncio.get_running_loop()
            self.server = await loop.create_server(self._accept, sock=sock, backlog=1024)
            log.warning("listener %s: accepting connections again", self.name)
        finally:
            self._resuming = None

    async def _deadline_tick(self) -> None:
        while True:
            await asyncio.sleep(DEADLINE_TICK)
            if self.deadlines:
                now = monotonic()
                for stream in [s for s in self.deadlines if s.deadline <= now]:
                    self.deadlines.discard(stream)
                    stream.deadline_passed()

    def close(self) -> None:
        """Stop accepting and stop the deadline tick (the process is going away)."""
        self.stop_accepting()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def handover_socket(self) -> socket.socket:
        """A duplicate of the listening socket, for the runtime that replaces this one: the
        same accept queue, so no connection waiting in it is lost in the swap."""
        if self._parked is not None:
            return socket.socket(fileno=os.dup(self._parked.fileno()))
        assert self.server is not None
        return socket.socket(fileno=os.dup(self.server.sockets[0].fileno()))

    def bound_address(self) -> tuple[str, int]:
        """The address actually bound (port 0 resolved); still known after the socket closed."""
        if self._bound is None:
            assert self.server is not None
            sockname = self.server.sockets[0].getsockname()
            self._bound = (sockname[0], sockname[1])
        return self._bound

    def _accept(self) -> asyncio.Protocol:
        return ChainSelector(self)

    # ------------------------------------------------------------------ connection tracking

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Admission of a socket just accepted (``admission.py``); a refused one is closed."""
        now = asyncio.get_running_loop().time()
        refusal = self.admission.admit(self.pending, now)
        stats = self.stats
        if refusal is None:
            self.pending += 1
            stats.downstream_pre_cx_total += 1
            stats.downstream_pre_cx_active += 1
            return True
        if refusal is Refusal.PENDING:
            stats.downstream_pre_cx_overflow += 1
        elif refusal is Refusal.OVERLOAD:
            stats.downstream_cx_overload_reject += 1
        elif refusal is Refusal.FD_RESERVE:
            stats.downstream_cx_fd_reserve_reject += 1
        else:
            stats.downstream_global_cx_overflow += 1
        transport.abort()  # type: ignore[attr-defined]  # a stream transport: create_server's
        self._logs.log(
            logging.WARNING, refusal, now, "listener %s: connection refused: %s", self.name, refusal
        )
        return False

    def adopt(self, other: ListenerRuntime) -> None:
        """A pre-connection ``other`` admitted goes on with this (its successor's) config."""
        other.pending -= 1
        other.stats.downstream_pre_cx_active -= 1
        self.pending += 1
        self.stats.downstream_pre_cx_active += 1

    def pre_closed(self, limit: ChainLimit | None = None) -> None:
        """A pre-connection ended before a codec had it: its slot goes back, and its place in
        its chain's connection_limit (``limit``) once a chain admitted it."""
        if limit is not None:
            limit.release()
        self.pending -= 1
        self.stats.downstream_pre_cx_active -= 1
        self.stats.downstream_pre_cx_abandoned += 1
        self.admission.release()

    def connection_opened(self, conn: Tracked) -> None:
        """A codec's connection began; it was this listener's pre-connection until now."""
        self.pending -= 1
        self.connections.add(conn)
        stats = self.stats
        stats.downstream_pre_cx_active -= 1
        stats.downstream_cx_total += 1
        stats.downstream_cx_active += 1

    def connection_closed(self, conn: Tracked) -> None:
        if (limit := conn.ctx.connection_limit) is not None:
            limit.release()
        self.connections.discard(conn)
        self.stats.downstream_cx_active -= 1
        self.stats.downstream_cx_destroy += 1
        self.admission.release()
        if self._drained is not None and not self.connections:
            self._drained.set()

    def sweep(self, now: float) -> None:
        """Enforce the idle timeouts: keep-alive, stream and TCP, and HTTP/1.1's request head and
        connection duration timeouts (called about once a second).
        ``now`` is loop time (connections' idle clocks); streams read the request path's clock."""
        request_now = monotonic()
        # reduce_timeouts shrinks the idle timers while the overload manager says so.
        scale = self.admission.overload.state.scale_timeout
        for conn in list(self.connections):
            if isinstance(conn, DownstreamConnection):
                conn.sweep(now, request_now, scale)
            elif isinstance(conn, TcpDownstream):
                conn.check_idle(now)
            elif isinstance(conn, H2Downstream):
                limit = conn.ctx.config.idle_timeout
                if (
                    limit > 0
                    and conn.is_idle()
                    and now - conn.idle_since > scale("HTTP_DOWNSTREAM_CONNECTION_IDLE", limit)
                ):
                    conn.close()

    def rotate(self, chain: FilterChain, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> None:
        """New certificate material for ``chain``: new handshakes use it, open connections carry on."""
        old = self.tls_contexts.get(id(chain))
        if old is None:
            return
        cfg = dataclasses.replace(
            old.cfg, certificate_chain=chain_pem, private_key=key_pem, trusted_ca=bundle_pem
        )
        try:
            self.tls_contexts[id(chain)] = _tls.TlsContext(cfg)
        except Exception as exc:  # a bad set must not take the listener down: keep the old one
            log.error(
                "listener %s: rotated certificate rejected, keeping the previous one: %s", self.name, exc
            )
            return
        log.info("listener %s: certificate rotated", self.name)

    def handshake_done(
        self, peer: Any, limit: ChainLimit | None, negotiated: Negotiated | None, error: TlsError | None
    ) -> None:
        """Count every handshake by its group, every refusal by its reason, and say why (one
        line per reason per second: a handshake flood must not become a log flood). A refused
        handshake gives back its slot and its place in the chain's connection_limit ``limit``."""
        stats = self.stats
        if error is None:
            assert negotiated is not None
            count_handshake(stats, negotiated)
            self._store.inventory.record(negotiated, "inbound", time())
            return
        self.pre_closed(limit)
        stats.ssl_connection_error += 1
        # Counted by code (a fixed vocabulary, so the label set stays bounded); the log says why.
        reasons = stats.ssl_errors_by_reason
        reasons[error.code] = reasons.get(error.code, 0) + 1
        where = host_port(peer[0], peer[1]) if peer else "?"
        now = asyncio.get_running_loop().time()
        self._logs.log(
            logging.WARNING,
            error.code,
            now,
            "listener %s: TLS handshake with %s refused: %s",
            self.name,
            where,
            error.reason,
        )

    # ------------------------------------------------------------------ drain

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
        if self._parked is not None:
            self._parked.close()
            self._parked = None

    def begin_graceful_drain(self) -> None:
        """Envoy's graceful drain: keep accepting, but in drain mode (each HTTP/1.1 response says
        ``connection: close``; HTTP/2 connections get GOAWAY, new ones after their first
        response) until ``drain`` stops accepting."""
        self.draining = True
        self.graceful = True
        for conn in list(self.connections):
            if isinstance(conn, H2Downstream):
                conn.goaway()

    async def drain(self, timeout: float, *, close_idle: bool = True) -> int:
        """Stop accepting, finish in-flight requests (bounded), close the rest; returns how many were cut.

        ``close_idle=False`` (a listener replaced by an xDS update) leaves idle keep-alive
        connections open until their next request, answered with "connection: close", or the
        deadline: closing them early races a request the client may be sending on them.
        """
        self.draining = True
        self.graceful = False
        self.stop_accepting()
        for conn in list(self.connections):
            if isinstance(conn, H2Downstream):
                conn.goaway()  # HTTP/2 clients keep reusing a connection unless told to stop
        # An idle keep-alive connection may have a request already in flight towards us; give
        # it a moment to arrive (it is then answered with "connection: close"), then close
        # the connections that are still idle.
        if close_idle and any(conn.is_idle() for conn in self.connections):
            await asyncio.sleep(min(DRAIN_IDLE_GRACE, timeout))
        for conn in list(self.connections) if close_idle else ():
            if conn.is_idle():
                conn.close()
        if self.connections:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                pass
        cut = len(self.connections)
        for conn in list(self.connections):
            conn.abort()
        return cut
