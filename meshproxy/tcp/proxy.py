"""The tcp_proxy network filter: an opaque byte relay between a client and an upstream host.

Owns one downstream connection and its upstream twin: cluster choice (single or weighted),
the host (picked, or the original destination for an ORIGINAL_DST cluster), connecting with
the cluster's timeout, relaying bytes both ways with flow control (each side's
write buffer pauses the other side's reads), half-close propagation, the idle timeout, a
session access-log line, and the session's Istio TCP series (istio.stats: opened once the
upstream is connected, closed with its bytes at the end). Must not know about HTTP.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

from meshproxy.addresses import address_of, host_port
from meshproxy.config.model import TcpProxy

if TYPE_CHECKING:
    from meshproxy.access_log import AccessLogger
    from meshproxy.connection_limit import ChainLimit
    from meshproxy.listener.runtime import ListenerRuntime
    from meshproxy.stats import TcpStats
    from meshproxy.telemetry.istio import TcpReporter, TcpSeries
    from meshproxy.upstream.cluster import ClusterRuntime, Host
    from meshproxy.upstream.manager import ClusterManager


class TcpContext:
    __slots__ = ("access_log", "clusters", "config", "connection_limit", "istio", "listener", "rng", "stats")

    def __init__(
        self,
        config: TcpProxy,
        clusters: ClusterManager,
        stats: TcpStats,
        listener: ListenerRuntime,
        access_log: AccessLogger | None,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.clusters = clusters
        self.stats = stats
        self.listener = listener
        self.access_log = access_log
        self.rng = rng
        # The chain's connection_limit counter, installed by the listener; None: no limit.
        self.connection_limit: ChainLimit | None = None
        # Istio's TCP metrics (the chain's istio.stats filter), installed by the listener.
        self.istio: TcpReporter | None = None

    def cluster_name(self) -> str:
        cfg = self.config
        if cfg.cluster is not None:
            return cfg.cluster
        point = self.rng.randrange(cfg.total_weight)
        for wc in cfg.weighted_clusters:
            if point < wc.weight:
                return wc.name
            point -= wc.weight
        return cfg.weighted_clusters[-1].name


class TcpDownstream(asyncio.Protocol):
    """``original_dst``: the destination the listener's original_dst filter restored (None:
    not restored); an ORIGINAL_DST cluster connects there."""

    def __init__(self, ctx: TcpContext, original_dst: tuple[str, int] | None = None) -> None:
        self.ctx = ctx
        self.original_dst = original_dst
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made, first
        self.upstream: TcpUpstream | None = None
        self.pending: list[bytes] = []
        self.cluster: ClusterRuntime | None = None
        self.host: Host | None = None
        self.idle_since = self.loop.time()
        self.rx = 0
        self.tx = 0
        self.closed = False
        self.eof_pending = False
        self.flags = "-"
        self.start = time.time()
        self.peer = ""
        self.series: TcpSeries | None = None  # Istio's, once the upstream is connected
        self.attempts = 0  # upstream connects tried (max_connect_attempts)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (create_server/connection)
        self.ctx.listener.connection_opened(self)
        self.ctx.stats.downstream_cx_total += 1
        peer = transport.get_extra_info("peername")
        self.peer = host_port(*address_of(peer)) if peer else ""
        name = self.ctx.cluster_name()
        cluster = self.ctx.clusters.get(name)
        host = None
        if cluster is not None:
            hosts = cluster.original_dst
            host = cluster.pick() if hosts is None else hosts.host_for(self.original_dst)
        if cluster is None or host is None:
            self.ctx.stats.downstream_cx_no_route += 1
            self.flags = "NC" if cluster is None else "UH"
            transport.close()
            return
        if not cluster.can_connect():
            # As Envoy's tcp_proxy: the cluster's max_connections (DEFAULT priority) is a hard
            # limit here, with no pending queue: the session closes, flagged UO.
            self.flags = "UO"
            transport.close()
            return
        self.transport.pause_reading()  # nothing to send it to yet
        self._connect(cluster, host)

    def _connect(self, cluster: ClusterRuntime, host: Host) -> None:
        self.cluster, self.host = cluster, host
        self.attempts += 1
        task = cluster.open_connection(host, lambda: TcpUpstream(self))
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[TcpUpstream]) -> None:
        if task.cancelled() or task.exception() is not None:
            cluster = self.cluster
            if not task.cancelled() and not self.closed and cluster is not None:
                # max_connect_attempts: as Envoy, the next attempt picks a host afresh.
                host = cluster.pick() if cluster.original_dst is None else self.host
                if self.attempts < self.ctx.config.max_connect_attempts and host is not None:
                    self._connect(cluster, host)
                    return
            self.flags = "UF"
            self.close()
            return
        up = task.result()
        if self.closed:
            up.transport.close()
            return
        self.upstream = up
        if self.ctx.istio is not None:
            self._istio_series().opened += 1
        if self.pending:
            up.transport.write(b"".join(self.pending))
            self.pending.clear()
        if self.eof_pending and up.transport.can_write_eof():
            up.transport.write_eof()
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.rx += len(data)
        self.idle_since = self.loop.time()
        up = self.upstream
        if up is not None:
            up.transport.write(data)
        else:
            # Connecting: uvloop ignores pause_reading() inside connection_made, so bytes can
            # arrive now; keep them (one read's worth) and pause until the upstream is there.
            self.pending.append(data)
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof_pending = True
        up = self.upstream
        if up is not None:
            if up.eof:
                return False  # both directions are finished
            if up.transport.can_write_eof():
                up.transport.write_eof()
        return True  # keep our write side open until the upstream finishes

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ctx = self.ctx
        ctx.listener.connection_closed(self)
        ctx.stats.downstream_cx_rx_bytes_total += self.rx
        ctx.stats.downstream_cx_tx_bytes_total += self.tx
        if ctx.istio is not None and self.cluster is not None:
            series = self.series
            if series is None:  # the upstream never connected: opened and closed at once
                series = self._istio_series()
                series.opened += 1
            series.closed += 1
            series.sent += self.tx
            series.received += self.rx
        if self.upstream is not None:
            self.upstream.transport.close()
        if ctx.access_log is not None:
            local = self.original_dst or self.transport.get_extra_info("sockname")
            ctx.access_log.log(
                {
                    "start_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.start)),
                    "protocol": "TCP",
                    "response_flags": self.flags,
                    "bytes_received": self.rx,
                    "bytes_sent": self.tx,
                    "duration_ms": round((time.time() - self.start) * 1000, 3),
                    "upstream_host": self.host.label if self.host is not None else None,
                    "upstream_cluster": self.cluster.config.name if self.cluster is not None else None,
                    "downstream_remote_address": self.peer,
                    "downstream_local_address": host_port(*local) if local else "",
                }
            )

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.resume_reading()

    def _istio_series(self) -> TcpSeries:
        istio, cluster, host = self.ctx.istio, self.cluster, self.host
        assert istio is not None and cluster is not None and host is not None
        tls = self.transport.get_extra_info("tls")
        series = self.series = istio.series(tls, cluster, host.tls, self.flags)
        return series

    def check_idle(self, now: float) -> None:
        limit = self.ctx.config.idle_timeout
        if limit > 0 and now - self.idle_since > limit:
            self.ctx.stats.idle_timeout += 1
            self.flags = "SI"
            self.close()

    def is_idle(self) -> bool:
        return False  # an opaque stream has no request boundaries: drain waits or cuts

    def close(self) -> None:
        if not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.transport.abort()


class TcpUpstream(asyncio.Protocol):
    def __init__(self, down: TcpDownstream) -> None:
        self.down = down
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made, first
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (create_server/connection)

    def data_received(self, data: bytes) -> None:
        down = self.down
        down.tx += len(data)
        down.idle_since = down.loop.time()
        if not down.closed:
            down.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        down = self.down
        if down.eof_pending:
            down.close()
            return False
        if not down.closed and down.transport.can_write_eof():
            down.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        cluster = self.down.cluster
        if cluster is not None:
            cluster.connection_closed()  # gives back its max_connections slot
        self.down.close()

    def pause_writing(self) -> None:
        if not self.down.closed:
            self.down.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.down.closed:
            self.down.transport.resume_reading()
