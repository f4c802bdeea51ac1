"""Runtime state of one upstream cluster: hosts, pooled connections, and upstream policy.

Owns what changes while traffic flows for a cluster whose configuration is a frozen
``model.Cluster``: resolved hosts and their idle connections, the host selector (priorities,
localities, the LB picker), the circuit breakers (with the queue of requests waiting for a
connection), outlier detection and active health checks. It is the one place where those
cores meet: a host is *available* when EDS says it is usable, its health checks pass and
outlier detection has not ejected it, and the selector is rebuilt whenever that changes.
State is keyed by endpoint address and carried across a configuration swap (``inherit``).
The request path only calls synchronous methods (``pick``, ``admit_*``, ``acquire``,
``release``); connection establishment, probes and the outlier interval are asynchronous.
Must not know about HTTP: the caller provides the protocol factory.

Connections belong to a routing priority (Envoy keeps one connection pool per priority): a
connection counts against the ``max_connections`` of the priority of the request that opened
it (``can_connect(rm)``, ``open_connection(host, factory, rm)``; None is DEFAULT, as for the
TCP proxy, which has no route priority), its protocol object remembers that manager as
``resources`` and gives the slot back to it (``connection_closed(rm)``). An idle connection is
reused only by a request of its own priority (``acquire(host, rm)``, ``release``), as in Envoy:
reusing opens nothing, so it could not exceed a limit, but a DEFAULT request holding a
connection HIGH opened would hold one of HIGH's slots, and DEFAULT load could then starve the
HIGH traffic the separate thresholds exist to protect. For the same reason each priority has
its own queue of waiting requests, woken only by a slot or a connection of that priority.

It is one module of about 620 lines because availability ties its parts together: membership,
health results and ejections each rebuild the one selector, and the breakers' pending queue is
served by the same pool release and connection close paths; the policies themselves live in
their own sans-I/O modules (``selection``, ``breaker``, ``outlier``, ``health_check``, ``lb``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
from collections import deque
from collections.abc import Callable, Iterator
from time import monotonic, time
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from meshproxy import tls as _tls  # its names load on first use: pyOpenSSL with the first TlsContext
from meshproxy.addresses import host_port
from meshproxy.config.model import Cluster, Locality, SocketAddress
from meshproxy.stats import ClusterStats
from meshproxy.tls.counts import count_handshake
from meshproxy.tls.errors import TlsError
from meshproxy.tls.transport import connect_tls
from meshproxy.upstream.breaker import Breakers, ResourceManager
from meshproxy.upstream.health_check import HealthChecker
from meshproxy.upstream.keepalive import set_keepalive
from meshproxy.upstream.outlier import OutlierDetector
from meshproxy.upstream.selection import HostSelector

if TYPE_CHECKING:
    from meshproxy.tls.engine import Negotiated
    from meshproxy.tls.inventory import CryptoInventory
    from meshproxy.upstream.original_dst import OriginalDstHosts

log = logging.getLogger("meshproxy.upstream")

_USABLE = frozenset({"UNKNOWN", "HEALTHY", "DEGRADED"})

P = TypeVar("P", bound=asyncio.Protocol)


class PooledConnection(Protocol):
    """What a pooled upstream connection offers the pool."""

    host: Host
    idle_since: float
    resources: ResourceManager  # the priority whose max_connections slot it holds (its pool)

    def is_reusable(self) -> bool: ...

    def close(self) -> None: ...


class Waiter(Protocol):
    """A request waiting for a connection (circuit breakers' pending requests)."""

    @property
    def resources(self) -> ResourceManager | None:
        """The breakers of the request's routing priority (None: DEFAULT)."""

    def take(self, upstream: Any) -> None: ...

    def connect(self) -> None: ...


_NO_LOCALITY = Locality()


class Host:
    """One resolved upstream address, with its idle connections (LIFO: the warmest first)."""

    __slots__ = (
        "address",
        "available",
        "cx_active",
        "ejected",
        "hc_ok",
        "health_status",
        "idle",
        "key",
        "label",
        "locality",
        "locality_weight",
        "priority",
        "rq_active",
        "rq_total",
        "tls",
        "weight",
    )

    def __init__(
        self,
        address: SocketAddress,
        weight: int,
        health_status: str,
        priority: int,
        locality: Locality = _NO_LOCALITY,
        locality_weight: int = 0,
        hostname: str = "",
    ) -> None:
        self.address = address
        self.label = host_port(address.host, address.port)
        self.key = hostname or self.label  # what ring hash and maglev hash on
        self.weight = weight
        self.health_status = health_status
        self.priority = priority
        self.locality = locality
        self.locality_weight = locality_weight
        self.idle: list[PooledConnection] = []
        self.cx_active = 0
        self.rq_active = 0
        self.rq_total = 0
        self.hc_ok = True  # active health checks pass (or none configured)
        self.ejected = False  # outlier detection
        self.available = health_status in _USABLE
        # The latest TLS handshake with this host (its identity and group: Istio's metrics).
        self.tls: Negotiated | None = None

    @property
    def usable(self) -> bool:
        return self.health_status in _USABLE


def endpoint_hosts(config: Cluster) -> Iterator[Host]:
    """A Host per endpoint of a STATIC or EDS cluster, one at a time (a caller building
    thousands can yield to its event loop in between)."""
    for loc in config.localities:
        for ep in loc.endpoints:
            yield Host(
                ep.address, ep.weight, ep.health_status, loc.priority, loc.locality, loc.weight, ep.hostname
            )


def connect_failure(exc: BaseException) -> str:
    """What a failed connect says in a local reply (``upstream connect error: …``)."""
    return "timeout" if isinstance(exc, TimeoutError) else (str(exc) or type(exc).__name__)


class ClusterRuntime:
    """A cluster as traffic sees it: pick a host, take or return a pooled connection."""

    def __init__(
        self,
        config: Cluster,
        stats: ClusterStats,
        rng: random.Random,
        inventory: CryptoInventory | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.rng = rng
        self.inventory = inventory  # the process's crypto inventory: each handshake's peer
        self.hosts: list[Host] = []
        self.selector: HostSelector[Host] | None = None
        self.resolved = config.discovery == "STATIC"
        self.hashing = config.lb.policy in ("RING_HASH", "MAGLEV")
        self.breakers = Breakers(config.thresholds)
        rm = self.breakers.default
        self._rq, self._pending, self._cx, self._retries = (
            rm.requests,
            rm.pending_requests,
            rm.connections,
            rm.retries,
        )
        # Requests waiting for a connection, per routing priority (by its ResourceManager).
        self.waiters: dict[ResourceManager, deque[Waiter]] = {}
        od = config.outlier_detection
        self.outlier = OutlierDetector(od, rng) if od is not None else None
        self.observing = self.outlier is not None
        self._outlier_timer: asyncio.TimerHandle | None = None
        self.health: HealthChecker | None = None
        # Built once per cluster config; holds the client session cache for resumption.
        self.tls = _tls.TlsContext(config.tls) if config.tls is not None else None
        self.original_dst: OriginalDstHosts | None = None  # type ORIGINAL_DST (the manager sets it)
        self._gauges()

    def inherit(self, old: ClusterRuntime) -> None:
        """Carry runtime state across a config swap: hosts and pools, breaker counts and the
        waiting queues, outlier state (an ejected host stays ejected), health results."""
        self.hosts = old.hosts
        old.breakers.update(self.config.thresholds)
        self.breakers = old.breakers
        rm = self.breakers.default
        self._rq, self._pending, self._cx, self._retries = (
            rm.requests,
            rm.pending_requests,
            rm.connections,
            rm.retries,
        )
        self.waiters = old.waiters
        od = self.config.outlier_detection
        if od is not None and old.outlier is not None:
            old.outlier.configure(od)
            self.outlier = old.outlier
        old._stop_outlier_timer()
        if old.health is not None:
            if old.config.health_checks == self.config.health_checks:
                self.health, old.health = old.health, None
            else:
                old.retire()
        self._gauges()

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
        if self.outlier is not None:
            self.outlier.set_hosts(h.key for h in merged)
        self._rebuild()

    def _rebuild(self) -> None:
        """A new selector over the hosts' current availability (O(hosts))."""
        outlier = self.outlier
        healthy = 0
        for h in self.hosts:
            h.ejected = outlier is not None and outlier.is_ejected(h.key)
            h.available = h.health_status in _USABLE and h.hc_ok and not h.ejected
            healthy += h.available
        self.selector = HostSelector(self.hosts, self.config.lb, self.rng) if self.hosts else None
        self.stats.membership_total = len(self.hosts)
        self.stats.membership_healthy = healthy
        if outlier is not None:
            self._outlier_stats()
            if self._outlier_timer is None:
                self._schedule_outlier()
        if self.config.health_checks:
            self._health_hosts()

    # ------------------------------------------------------------------ health and outliers

    def _health_hosts(self) -> None:
        checker = self.health
        if checker is None:
            checker = self.health = HealthChecker(
                self.config.name, self.config.health_checks, self._health_changed, self.rng
            )
            for h in self.hosts:
                h.hc_ok = False  # Envoy: a host waits for its first passing check
            checker.set_hosts([(h.label, h.address) for h in self.hosts])
            checker.start()
            return
        for h in self.hosts:
            h.hc_ok = checker.status(h.label) == "healthy"
        checker.set_hosts([(h.label, h.address) for h in self.hosts])

    def _health_changed(self, key: str, healthy: bool) -> None:
        for h in self.hosts:
            if h.label == key:
                h.hc_ok = healthy
        checker = self.health
        if checker is not None:
            hs = checker.stats
            st = self.stats
            st.health_check_attempt, st.health_check_success = hs.attempt, hs.success
            st.health_check_failure, st.health_check_network_failure = hs.failure, hs.network_failure
            st.health_check_healthy = hs.healthy
        self._rebuild()

    def _schedule_outlier(self) -> None:
        od = self.config.outlier_detection
        if od is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._outlier_timer = loop.call_later(od.interval, self._outlier_tick)

    def _stop_outlier_timer(self) -> None:
        if self._outlier_timer is not None:
            self._outlier_timer.cancel()
            self._outlier_timer = None

    def _outlier_tick(self) -> None:
        self._outlier_timer = None
        outlier = self.outlier
        if outlier is None:
            return
        if outlier.tick(monotonic()):
            self._rebuild()
        self._schedule_outlier()

    def _outlier_stats(self) -> None:
        o = self.outlier.stats  # type: ignore[union-attr]  # only called with outlier detection configured
        st = self.stats
        st.outlier_detection_ejections_active = o.ejections_active
        st.outlier_detection_ejections_enforced_total = o.ejections_enforced_total
        st.outlier_detection_ejections_overflow = o.ejections_overflow
        st.outlier_detection_ejections_by_kind = {k: v for k, v in o.enforced.items() if v}

    def observe(self, host: Host | None, status: int, latency: float) -> None:
        """An upstream response's status and time to headers (outlier detection)."""
        outlier = self.outlier
        if (
            outlier is not None
            and host is not None
            and outlier.record(host.key, status, latency, monotonic())
        ):
            self._rebuild()

    def host_failed(self, host: Host) -> None:
        """A local-origin failure: connect failure, reset or timeout."""
        outlier = self.outlier
        if outlier is not None and outlier.record_local(host.key, False, monotonic()):
            self._rebuild()

    # ------------------------------------------------------------------ request path

    def pick(self, hash: int | None = None, exclude: Host | None = None) -> Host | None:
        selector = self.selector
        if selector is None:
            self.stats.upstream_cx_none_healthy += 1
            return None
        if hash is None:
            hash = self.rng.getrandbits(64) if self.hashing else 0
        host = selector.select(hash) if exclude is None else selector.select(hash, (exclude,))
        if host is None:
            self.stats.upstream_cx_none_healthy += 1
        return host

    # ------------------------------------------------------------------ admission (breakers)

    def admit_request(self, rm: ResourceManager, source: bytes) -> bool | None:
        """The max_requests breaker of a routing priority (``rm``) and its fair share for
        ``source`` (the downstream peer): True when admitted and counted, False when the
        breaker is full, None when ``source`` is over its fair share."""
        rq = rm.requests
        if rq.count >= rq._max:
            self.stats.upstream_rq_pending_overflow += 1
            return False
        if not rm.share.admits(source, rq.count, rq._max):
            self.stats.upstream_rq_fair_share_overflow += 1
            return None
        rq.count += 1
        rm.share.inc(source)
        if rq is self._rq and rq.count >= rq._max:
            self.stats.rq_open = 1
        return True

    def request_done(self, rm: ResourceManager | None, retried: bool, source: bytes) -> None:
        """A request of ``source`` admitted by ``admit_request(rm)`` ended (``retried``: it
        held a retry)."""
        if rm is None:
            return
        rm.requests.dec()
        rm.share.dec(source)
        if retried:
            rm.retries.dec()
        if rm.requests is self._rq:
            self.stats.rq_open = int(self._rq.open)
            self.stats.rq_retry_open = int(self._retries.open)
            if rm.thresholds.track_remaining:
                self._gauges()

    def admit_retry(self, rm: ResourceManager | None) -> bool:
        """The retry breaker (max_retries or the retry budget) of a routing priority."""
        retries = rm.retries if rm is not None else self._retries
        if not retries.can_create():
            self.stats.upstream_rq_retry_overflow += 1
            return False
        retries.inc()
        if retries is self._retries:
            self.stats.rq_retry_open = int(retries.open)
        return True

    def can_connect(self, rm: ResourceManager | None = None) -> bool:
        """The max_connections breaker of a routing priority (``rm``; None: DEFAULT); a
        refusal means the caller waits as a pending request."""
        if (rm or self.breakers.default).connections.can_create():
            return True
        self.stats.upstream_cx_overflow += 1
        return False

    def enqueue(self, waiter: Waiter) -> bool:
        """Queue a request until a connection of its routing priority frees up
        (max_pending_requests of that priority bounds the queue)."""
        rm = waiter.resources or self.breakers.default
        if not self.pend(rm):
            return False
        self.waiters.setdefault(rm, deque()).append(waiter)
        return True

    def pend(self, rm: ResourceManager | None = None) -> bool:
        """Count a request that waits for a connection (or, on HTTP/2, a stream slot) against
        max_pending_requests of its routing priority (``rm``; None: DEFAULT); False when that
        is reached. Each True is paired with one ``unpend`` of the same ``rm``."""
        pending = self._pending if rm is None else rm.pending_requests
        if not pending.can_create():
            self.stats.upstream_rq_pending_overflow += 1
            return False
        pending.inc()
        st = self.stats
        st.upstream_rq_pending_total += 1
        st.upstream_rq_pending_active += 1  # cluster-wide, every priority
        st.rq_pending_open = int(self._pending.open)
        return True

    def dequeue(self, waiter: Waiter) -> None:
        rm = waiter.resources or self.breakers.default
        try:
            self.waiters[rm].remove(waiter)
        except (KeyError, ValueError):
            return
        self.unpend(rm)

    def unpend(self, rm: ResourceManager | None = None) -> None:
        (self._pending if rm is None else rm.pending_requests).dec()
        st = self.stats
        st.upstream_rq_pending_active -= 1
        st.rq_pending_open = int(self._pending.open)

    def _next_waiter(self, rm: ResourceManager) -> Waiter | None:
        """The oldest request waiting for a connection of ``rm``'s priority, taken off its
        queue and uncounted as pending; None when none waits."""
        waiters = self.waiters.get(rm)
        if not waiters:
            return None
        waiter = waiters.popleft()
        self.unpend(rm)
        return waiter

    def connection_opened(self, rm: ResourceManager | None = None) -> None:
        """A connection for priority ``rm`` (None: DEFAULT) takes one of its max_connections
        slots."""
        cx = (rm or self.breakers.default).connections
        cx.inc()
        if cx is self._cx:
            self.stats.cx_open = int(cx.open)

    def connection_closed(self, rm: ResourceManager | None = None) -> None:
        """A connection this cluster opened for priority ``rm`` (None: DEFAULT) is gone: a
        request of that priority waiting for a connection may open one now."""
        rm = rm or self.breakers.default
        cx = rm.connections
        cx.dec()
        if cx is self._cx:
            self.stats.cx_open = int(cx.open)
        while cx.can_create() and (waiter := self._next_waiter(rm)) is not None:
            waiter.connect()

    def _gauges(self) -> None:
        st = self.stats
        for name, value in self.breakers.default.gauges().items():
            setattr(st, name, value)

    def acquire(self, host: Host, rm: ResourceManager | None = None) -> PooledConnection | None:
        """The warmest idle connection to ``host`` of priority ``rm``'s pool (None: DEFAULT).
        Cost: O(idle connections of the host); other priorities' are passed over."""
        rm = rm or self.breakers.default
        idle = host.idle
        i = len(idle)
        while i:
            i -= 1
            conn = idle[i]
            if conn.resources is not rm:
                continue
            del idle[i]
            if conn.is_reusable():
                return conn
            conn.close()
        return None

    def release(self, conn: PooledConnection, now: float) -> None:
        rm = conn.resources
        waiter = self._next_waiter(rm)
        if waiter is not None:
            # A request of this priority waits for a connection (max_connections reached).
            waiter.take(conn)
            return
        host = conn.host
        idle = host.idle
        cap = self.config.max_idle_connections  # per priority pool; counted only when it may bind
        if not host.usable or (len(idle) >= cap and sum(c.resources is rm for c in idle) >= cap):
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)

    def forget(self, conn: PooledConnection) -> None:
        """The connection closed: it must never be handed out again."""
        try:
            conn.host.idle.remove(conn)
        except ValueError:
            pass

    def open_connection(
        self, host: Host, factory: Callable[[], P], rm: ResourceManager | None = None
    ) -> asyncio.Task[P]:
        """Start opening a connection to ``host`` for routing priority ``rm`` (None: DEFAULT;
        TLS when the cluster has an UpstreamTlsContext); the task raises OSError,
        TimeoutError or TlsError.

        The connection counts against that priority's max_connections from this call on
        (synchronously, so requests arriving in the same loop turn see it); a failed or
        cancelled attempt gives the slot back here, an established one when its protocol calls
        ``connection_closed`` with the same ``rm``.
        """
        rm = rm or self.breakers.default
        self.stats.upstream_cx_total += 1
        self.connection_opened(rm)
        task = asyncio.get_running_loop().create_task(self._connect(host, factory))
        task.add_done_callback(functools.partial(self._connect_done, rm))
        return task

    def _connect_done(self, rm: ResourceManager, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.connection_closed(rm)

    async def _connect(self, host: Host, factory: Callable[[], P]) -> P:
        loop = asyncio.get_running_loop()
        address, bind = host.address, self.config.source_address
        local = (bind.host, bind.port) if bind is not None else None
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                proto: asyncio.BaseProtocol
                if self.tls is None:
                    transport, proto = await loop.create_connection(
                        factory, address.host, address.port, local_addr=local
                    )
                else:
                    transport, proto = await connect_tls(
                        loop, address.host, address.port, self.tls, factory, local_addr=local
                    )
                    negotiated = transport.get_extra_info("tls")
                    count_handshake(self.stats, negotiated)
                    host.tls = negotiated
                    if self.inventory is not None:
                        self.inventory.record(negotiated, "outbound", time())
                if self.config.tcp_keepalive is not None:
                    set_keepalive(transport, self.config.tcp_keepalive)
        except TlsError as exc:
            self.stats.upstream_cx_connect_fail += 1
            log.warning(
                "cluster %s: TLS handshake with %s refused: %s", self.config.name, host.label, exc.reason
            )
            raise
        except OSError as exc:  # TimeoutError included
            self.stats.upstream_cx_connect_timeout += isinstance(exc, TimeoutError)
            self.stats.upstream_cx_connect_fail += 1
            raise
        return proto  # type: ignore[return-value]  # the protocol factory() made (connect_tls is untyped in P)

    def rotate(self, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> None:
        """New client certificate material: new connections use it, pooled ones carry on."""
        if self.tls is None:
            return
        cfg = dataclasses.replace(
            self.tls.cfg, certificate_chain=chain_pem, private_key=key_pem, trusted_ca=bundle_pem
        )
        try:
            self.tls = _tls.TlsContext(cfg)
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
        if self.original_dst is not None:
            self.original_dst.sweep(now)
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

    def retire(self) -> None:
        """The cluster left the configuration: stop its probes and timers, close idle pools."""
        self._stop_outlier_timer()
        checker, self.health = self.health, None
        if checker is not None:
            try:
                asyncio.get_running_loop().create_task(checker.close())
            except RuntimeError:
                pass
        self.close_idle()

    async def aclose(self) -> None:
        """The proxy is stopping: like ``retire``, but waits for the probes to stop."""
        self._stop_outlier_timer()
        checker, self.health = self.health, None
        if checker is not None:
            await checker.close()
        self.close_idle()

    def close_idle(self) -> None:
        for host in self.hosts:
            for c in host.idle:
                c.close()
            host.idle.clear()
