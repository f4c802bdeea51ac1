"""Runtime state of one upstream cluster: its hosts, their idle connections, the LB picker.

Owns what changes while traffic flows (resolved hosts, pooled connections, counters) for a
cluster whose configuration is a frozen ``model.Cluster``. State is keyed by endpoint address
so it carries across a configuration swap. Connection *establishment* is asynchronous and lives
here too, but the request path only calls ``pick``, ``acquire`` and ``release``, all synchronous.
Must not know about HTTP: the caller provides the protocol factory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from typing import Protocol, TypeVar

from meshproxy.config.model import Cluster, SocketAddress
from meshproxy.stats import ClusterStats
from meshproxy.tls.context import TlsContext
from meshproxy.tls.errors import TlsError
from meshproxy.tls.transport import connect_tls
from meshproxy.upstream.lb.round_robin import RoundRobin

log = logging.getLogger("meshproxy.upstream")

_USABLE = frozenset({"UNKNOWN", "HEALTHY", "DEGRADED"})

P = TypeVar("P", bound=asyncio.Protocol)


class PooledConnection(Protocol):
    """What a pooled upstream connection offers the pool."""

    host: Host
    idle_since: float

    def is_reusable(self) -> bool: ...

    def close(self) -> None: ...


class Host:
    """One resolved upstream address, with its idle connections (LIFO: the warmest first)."""

    __slots__ = ("address", "cx_active", "health_status", "idle", "label", "priority", "rq_total", "weight")

    def __init__(self, address: SocketAddress, weight: int, health_status: str, priority: int) -> None:
        self.address = address
        self.label = f"{address.host}:{address.port}"
        self.weight = weight
        self.health_status = health_status
        self.priority = priority
        self.idle: list[PooledConnection] = []
        self.cx_active = 0
        self.rq_total = 0

    @property
    def usable(self) -> bool:
        return self.health_status in _USABLE


class ClusterRuntime:
    """A cluster as traffic sees it: pick a host, take or return a pooled connection."""

    def __init__(self, config: Cluster, stats: ClusterStats, rng: random.Random) -> None:
        self.config = config
        self.stats = stats
        self.rng = rng
        self.hosts: list[Host] = []
        self._usable: list[Host] = []
        self._picker: RoundRobin | None = None
        self.resolved = config.discovery == "STATIC"
        # Built once per cluster config; holds the client session cache for resumption.
        self.tls = TlsContext(config.tls) if config.tls is not None else None

    # ------------------------------------------------------------------ membership

    def set_hosts(self, hosts: list[Host]) -> None:
        """Install a new host set; hosts already known (by address) keep their pools and counters."""
        known = {h.address: h for h in self.hosts}
        merged: list[Host] = []
        for h in hosts:
            old = known.pop(h.address, None)
            if old is not None:
                old.weight, old.health_status, old.priority = h.weight, h.health_status, h.priority
                h = old
            merged.append(h)
        for gone in known.values():
            for conn in gone.idle:
                conn.close()
            gone.idle.clear()
        self.hosts = merged
        self._rebuild()

    def _rebuild(self) -> None:
        # The lowest priority level with a usable host takes all traffic; the upstream-policy
        # issue brings Envoy's overprovisioning-factor spill-over and panic mode.
        usable: list[Host] = []
        for priority in sorted({h.priority for h in self.hosts}):
            usable = [h for h in self.hosts if h.priority == priority and h.usable]
            if usable:
                break
        self._usable = usable
        self._picker = RoundRobin([h.weight for h in usable], self.rng.randrange(1 << 16)) if usable else None
        self.stats.membership_total = len(self.hosts)
        self.stats.membership_healthy = sum(1 for h in self.hosts if h.usable)

    def static_hosts(self) -> list[Host]:
        return [
            Host(ep.address, ep.weight, ep.health_status, loc.priority)
            for loc in self.config.localities
            for ep in loc.endpoints
        ]

    # ------------------------------------------------------------------ request path

    def pick(self) -> Host | None:
        picker = self._picker
        if picker is None:
            self.stats.upstream_cx_none_healthy += 1
            return None
        return self._usable[picker.pick()]

    def acquire(self, host: Host) -> PooledConnection | None:
        idle = host.idle
        while idle:
            conn = idle.pop()
            if conn.is_reusable():
                return conn
            conn.close()
        return None

    def release(self, conn: PooledConnection, now: float) -> None:
        host = conn.host
        if len(host.idle) >= self.config.max_idle_connections or not host.usable:
            conn.close()
            return
        conn.idle_since = now
        host.idle.append(conn)

    def forget(self, conn: PooledConnection) -> None:
        """The connection closed: it must never be handed out again."""
        try:
            conn.host.idle.remove(conn)
        except ValueError:
            pass

    async def connect(self, host: Host, factory: Callable[[], P]) -> P:
        """Open a new connection to ``host`` (TLS when the cluster has an UpstreamTlsContext);
        raises OSError, TimeoutError or TlsError."""
        loop = asyncio.get_running_loop()
        self.stats.upstream_cx_total += 1
        address = host.address
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                if self.tls is None:
                    _, proto = await loop.create_connection(factory, address.host, address.port)
                else:
                    _, proto = await connect_tls(loop, address.host, address.port, self.tls, factory)
        except TlsError as exc:
            self.stats.upstream_cx_connect_fail += 1
            log.warning(
                "cluster %s: TLS handshake with %s refused: %s", self.config.name, host.label, exc.reason
            )
            raise
        except TimeoutError:
            self.stats.upstream_cx_connect_timeout += 1
            self.stats.upstream_cx_connect_fail += 1
            raise
        except OSError:
            self.stats.upstream_cx_connect_fail += 1
            raise
        return proto

    def rotate(self, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> None:
        """New client certificate material: new connections use it, pooled ones carry on."""
        if self.tls is None:
            return
        cfg = dataclasses.replace(
            self.tls.cfg, certificate_chain=chain_pem, private_key=key_pem, trusted_ca=bundle_pem
        )
        try:
            self.tls = TlsContext(cfg)
        except Exception as exc:  # keep the previous material rather than lose the cluster
            log.error(
                "cluster %s: rotated certificate rejected, keeping the previous one: %s",
                self.config.name,
                exc,
            )
            return
        log.info("cluster %s: certificate rotated", self.config.name)

    # ------------------------------------------------------------------ housekeeping

    def sweep_idle(self, now: float) -> None:
        """Close pooled connections idle for longer than the cluster's idle timeout."""
        limit = self.config.idle_timeout
        if limit <= 0:
            return
        for host in self.hosts:
            # idle[0] is the oldest (LIFO pool), so one comparison skips a fresh pool.
            if host.idle and now - host.idle[0].idle_since > limit:
                stale = [c for c in host.idle if now - c.idle_since > limit]
                host.idle[:] = [c for c in host.idle if now - c.idle_since <= limit]
                self.stats.upstream_cx_idle_timeout += len(stale)
                for c in stale:
                    c.close()

    def close_idle(self) -> None:
        for host in self.hosts:
            for c in host.idle:
                c.close()
            host.idle.clear()
