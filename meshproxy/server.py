"""The proxy process: one compiled configuration brought to life, and its orderly end.

Owns startup order (clusters first so listeners never route to nothing, then listeners, then
admin and readiness), the periodic housekeeping tick (idle sweeps, access-log flushes), the
swap to a new ``Config`` an xDS update brings (``apply``: listeners added, replaced and removed
without dropping in-flight requests), and shutdown: on SIGTERM readiness turns 503 and the
inbound listeners drain (stop accepting, let in-flight requests finish within the drain timeout,
``Connection: close`` / GOAWAY on keep-alive connections meanwhile) while the outbound ones
(``traffic_direction: OUTBOUND``) keep serving the application until it has exited
(``sidecar/lifecycle.py`` decides when), then drain the same way; then exit. With
``dynamic_resources`` the ADS client (``meshproxy.xds``) runs beside it, and ``/ready`` waits
for the first complete configuration.

Also owns the process-wide defences every listener shares (``Admission``): the overload
manager's runtime (built from the bootstrap's ``overload_manager``, started and stopped here;
each new state reaches every live listener, which passes it to its HTTP contexts), the global
downstream connection count and the file-descriptor reserve, and the loop's report of failed
``accept`` calls (counted per listener, logged at most once a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import resource
import signal
import time
from collections.abc import Callable, Coroutine, Hashable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from meshproxy.access_log import AccessLogs
from meshproxy.admin.server import Admin
from meshproxy.config.model import Config, FilterChain, HttpConnectionManager, Listener, TlsFiles
from meshproxy.errors import ConfigError
from meshproxy.hcm.context import HttpContext
from meshproxy.identity.source import CertMaterial, CertSources, Paths, Pem, Rotate
from meshproxy.listener.admission import Admission, FdReserve
from meshproxy.listener.log_limit import LogLimiter
from meshproxy.listener.runtime import ListenerRuntime, bind_socket
from meshproxy.overload.monitors import nofile_soft_limit, open_fds, return_free_memory
from meshproxy.overload.runtime import OverloadRuntime
from meshproxy.overload.state import OverloadState
from meshproxy.overload.trim import MemoryTrim
from meshproxy.router.table import RouteTable
from meshproxy.sidecar.lifecycle import DrainHold, Termination
from meshproxy.stats import Store
from meshproxy.telemetry.istio import IstioMetrics
from meshproxy.tracing.registry import Tracers
from meshproxy.upstream.cluster import ClusterRuntime
from meshproxy.upstream.manager import ClusterManager

if TYPE_CHECKING:
    import socket

    from meshproxy.tls.context import TlsContext
    from meshproxy.xds.client import AdsClient

log = logging.getLogger("meshproxy")

TICK = 1.0
# Longest stretch ``apply`` builds route tables without yielding to the event loop (seconds).
SLICE = 0.005


class Server:
    def __init__(
        self,
        config: Config,
        *,
        rng: random.Random | None = None,
        termination: Termination | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.config = config
        # A worker process (``meshproxy/workers/``) binds its listeners with SO_REUSEPORT.
        self.reuse_port = reuse_port
        self.termination = termination or Termination()
        self._shutdown: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()  # a second termination signal
        self.rng = rng or random.Random()
        self.store = Store()
        self.clusters = ClusterManager(self.store, self.rng)
        self.access_logs = AccessLogs()
        self.tracers = Tracers(self.store, self.clusters, self.rng)
        self.istio = IstioMetrics()  # Istio's standard metrics (istio.stats filters)
        self.listeners: dict[str, ListenerRuntime] = {}
        self.ready = False
        self.draining = False
        self.health_failed = False  # the admin's /healthcheck/fail (health_check filters: 503)
        self.stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None  # the crypto inventory's, with ADS
        self.certs = CertSources()
        # Listeners replaced or removed by an xDS update, draining their in-flight requests.
        self.retired: set[ListenerRuntime] = set()
        self.xds: AdsClient | None = None
        self.overload = OverloadRuntime(config.overload)
        self.overload.subscribe(self._overload_changed)
        limit = nofile_soft_limit()
        self.admission = Admission(
            self.overload, FdReserve(None if limit == resource.RLIM_INFINITY else limit, open_fds), self.rng
        )
        self._loop_logs = LogLimiter(log)
        self._trim = MemoryTrim()
        self._default_handler: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None
        self.admin = Admin(self)

    async def start(self) -> None:
        """Bring the configuration up; raises OSError if an address cannot be bound."""
        loop = asyncio.get_running_loop()
        self._default_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        await self.clusters.update(self.config.clusters)
        try:
            for lc in self.config.listeners:
                lr = self._listener(lc)
                await lr.start(
                    bind_socket(lc.address, lc.ipv4_compat, reuse_port=True) if self.reuse_port else None
                )
                self.listeners[lc.name] = lr
            admin = self.config.admin.address
            if admin is not None:
                await self.admin.start(admin.host, admin.port)
        except OSError:
            await self.close()
            raise
        self._follow_certificates()
        self._ticker = loop.create_task(self._tick())
        self.overload.start()
        self.store.server["live"] = 1
        if self.config.dynamic is None:
            self.ready = True
        else:  # ready once the ADS client applied a first complete configuration
            from meshproxy.xds.client import AdsClient
            from meshproxy.xds.inventory_report import report_inventory

            self.xds = AdsClient(self, self.config.dynamic, rng=self.rng)
            self.store.xds = self.xds.stats
            self.xds.start()
            inventory = self.store.inventory
            self._reporter = loop.create_task(report_inventory(self.xds, inventory, self.config.node.id))

    def _listener(self, lc: Listener, route_tables: Sequence[RouteTable] = ()) -> ListenerRuntime:
        lr = ListenerRuntime(
            lc,
            self.store.listener_stats(lc.name),
            self.store,
            self.clusters,
            self.access_logs,
            self.rng,
            self.admission,
            route_tables,
            peers=self.listeners,
            tracers=self.tracers,
            istio=self.istio,
        )
        lr.health_failed = self.health_failed
        return lr

    def fail_health_checks(self, failed: bool) -> None:
        """The admin's /healthcheck/fail (True) and /healthcheck/ok (False): what every
        health_check filter answers from now on (Envoy's healthCheckFailed)."""
        self.health_failed = failed
        for lr in self.listeners.values():
            lr.health_failed = failed

    def _overload_changed(self, state: OverloadState) -> None:
        for lr in (*self.listeners.values(), *self.retired):
            lr.set_overload(state)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio reports a failed ``accept`` (EMFILE, ENFILE, ENOBUFS, ENOMEM: it then pauses
        that listener for a second) through the loop's exception handler, once per failure:
        count it on its listener and log at most one line a second. Everything else goes to
        the handler that was there before."""
        exc = context.get("exception")
        sock = context.get("socket")
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS and sock is not None:
            for lr in (*self.listeners.values(), *self.retired):
                if lr.server is not None and any(s.fileno() == sock.fileno() for s in lr.server.sockets):
                    lr.stats.downstream_cx_accept_error += 1
            self._loop_logs.log(
                logging.ERROR,
                errno.errorcode.get(exc.errno or 0, "accept"),
                loop.time(),
                "accept() on %s failed: %s; retrying in 1s",
                sock.getsockname(),
                exc.strerror,
            )
            return
        if self._default_handler is not None:
            self._default_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    async def apply(self, config: Config) -> None:
        """Swap to ``config`` (an xDS update; raises ConfigError, changing nothing, when a new
        listener cannot bind). Order: bind every new listener's socket; add and change clusters
        (removed ones stay until no listener can route to them); start the new listener
        runtimes (a replaced listener hands its socket over and drains its in-flight requests;
        a removed one drains); then remove the clusters that left. Unchanged listeners and
        clusters are the same objects and are left alone."""
        if self.draining:
            return
        names = {ln.name for ln in config.listeners}
        changed = [
            ln
            for ln in config.listeners
            if (lr := self.listeners.get(ln.name)) is None or lr.config is not ln
        ]
        tables = await _build_route_tables(changed)
        sockets: dict[str, socket.socket] = {}
        for ln in changed:
            old = self.listeners.get(ln.name)
            try:
                if (
                    old is not None
                    and (old.config.address, old.config.ipv4_compat) == (ln.address, ln.ipv4_compat)
                    and old.server is not None
                ):
                    sockets[ln.name] = old.handover_socket()
                else:
                    sockets[ln.name] = bind_socket(ln.address, ln.ipv4_compat, reuse_port=self.reuse_port)
            except OSError as exc:
                for sock in sockets.values():
                    sock.close()
                where = f"{ln.address.host}:{ln.address.port}"
                raise ConfigError(
                    [f'listener "{ln.name}": cannot bind {where}: {exc.strerror or exc}']
                ) from exc
        keep = {c.name for c in config.clusters}
        leaving = tuple(rt.config for name, rt in self.clusters.clusters.items() if name not in keep)
        await self.clusters.update(config.clusters + leaving)
        for ln in changed:
            lr = self._listener(ln, tables)
            await lr.start(sockets.pop(ln.name))
            old = self.listeners.get(ln.name)
            self.listeners[ln.name] = lr
            if old is not None:
                old.successor = lr
                self._retire(old)
        for name in [n for n in self.listeners if n not in names]:
            self._retire(self.listeners.pop(name))
        self.config = config
        if leaving:
            await self.clusters.update(config.clusters)
        self._follow_certificates()

    def _retire(self, lr: ListenerRuntime) -> None:
        lr.draining = True
        lr.stop_accepting()
        self.retired.add(lr)
        self.spawn(self._drain_retired(lr))

    async def _drain_retired(self, lr: ListenerRuntime) -> None:
        try:
            cut = await lr.drain(self._drain_timeout([lr]), close_idle=False)
            if cut:
                log.info("listener %s (replaced): %d connection(s) cut at the drain deadline", lr.name, cut)
        finally:
            lr.close()
            self.retired.discard(lr)

    def _follow_certificates(self) -> None:
        """Every TLS context built from certificate files follows them (DESIGN decision 10):
        each live listener's filter chains and each cluster runtime, whether from the bootstrap
        or from xDS. Called after start and after every swap; a listener or cluster runtime the
        swap replaced or removed stops following (``CertSources.follow_only``). The files are
        polled on the housekeeping tick; a change rotates each follower's context: new
        handshakes use the new material, open connections keep theirs."""
        wanted: dict[Hashable, tuple[Paths, Pem, Rotate]] = {}
        for lr in self.listeners.values():
            chains = lr.config.filter_chains
            if lr.config.default_filter_chain is not None:
                chains += (lr.config.default_filter_chain,)
            for chain in chains:
                live = lr.tls_contexts.get(id(chain))
                if chain.tls_files is not None and live is not None:
                    # The callback holds ``chain``, so its id is not reused while followed.
                    wanted[lr, id(chain)] = (
                        _paths(chain.tls_files),
                        _pem(live),
                        partial(_rotate_chain, lr, chain),
                    )
        for rt in self.clusters.clusters.values():
            files = rt.config.tls_files
            if files is not None and rt.tls is not None:
                wanted[rt] = (_paths(files), _pem(rt.tls), partial(_rotate_cluster, rt))
        self.certs.follow_only(wanted)

    def listener_address(self, name: str) -> tuple[str, int]:
        return self.listeners[name].bound_address()

    def listener_addresses(self) -> dict[str, tuple[str, int]]:
        return {name: lr.bound_address() for name, lr in self.listeners.items()}

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK)
            now = loop.time()
            for lr in self.listeners.values():
                lr.sweep(now)
            self.access_logs.flush()
            self.certs.poll(now)
            self._return_memory_after_bursts(now)

    def _return_memory_after_bursts(self, now: float) -> None:
        """When a burst of connections or streams, or a handshake flood, has ended (``overload/trim.py``
        decides), hand the allocator's free pages back, and log what that returned and cost."""
        connections = self.overload.connections
        requests = sum(stats.downstream_rq_active for stats in self.store.http.values())
        abandoned = sum(lr.stats.downstream_pre_cx_abandoned for lr in self.listeners.values())
        holders, high_water = connections.active + requests, connections.take_high_water() + requests
        if not self._trim.due(now, holders, high_water, abandoned):
            return
        returned = return_free_memory()
        if returned is not None:
            before, after, took = returned
            log.info(
                "returned free memory after a burst: RSS %.1f -> %.1f MiB in %.1f ms",
                before / 2**20,
                after / 2**20,
                took * 1000,
            )

    def _begin_drain(self) -> bool:
        """Mark the process draining (readiness answers 503 from here on); False if it was."""
        if self.draining:
            return False
        self.draining = True
        self.store.server["draining"] = 1
        return True

    async def drain(
        self, timeout: float | None = None, *, inbound_only: bool = False, graceful: bool = False
    ) -> int:
        """Drain every listener (``inbound_only``: only the inbound ones; ``graceful``: after
        accepting in drain mode until traffic stops, as Envoy's ``/drain_listeners`` parameters);
        returns the number of connections cut at the deadline."""
        if not self._begin_drain():
            return 0
        inbound, outbound = self._by_direction()
        targets = inbound if inbound_only else inbound + outbound
        if graceful:
            return await self._graceful_drain(targets, "")
        return await self._drain(targets, "", timeout)

    def _by_direction(self) -> tuple[list[ListenerRuntime], list[ListenerRuntime]]:
        """The live listeners, inbound (``traffic_direction`` INBOUND or unspecified) and outbound."""
        inbound: list[ListenerRuntime] = []
        outbound: list[ListenerRuntime] = []
        for lr in self.listeners.values():
            (outbound if lr.config.traffic_direction == "OUTBOUND" else inbound).append(lr)
        return inbound, outbound

    async def _drain(self, listeners: list[ListenerRuntime], which: str, timeout: float | None = None) -> int:
        if not listeners:
            return 0
        if timeout is None:
            timeout = self._drain_timeout(listeners)
        log.info("draining %slisteners (up to %.1fs)", which, timeout)
        cut = sum(await asyncio.gather(*(lr.drain(timeout) for lr in listeners)))
        log.info("%slisteners drained; %d connection(s) cut at the deadline", which, cut)
        return cut

    @staticmethod
    def _drain_timeout(listeners: Iterable[ListenerRuntime]) -> float:
        """The longest http_connection_manager drain_timeout (Envoy's default: 5 s)."""
        return max(
            (
                fc.filter.drain_timeout
                for lr in listeners
                for fc in lr.config.filter_chains
                if isinstance(fc.filter, HttpConnectionManager)
            ),
            default=5.0,
        )

    def terminate(self) -> None:
        """SIGTERM, SIGINT or ``/quitquitquit``: the first starts the shutdown, a later one
        ends the holds at once (``sidecar/lifecycle.py`` rule 5)."""
        if self._shutdown is None:
            self._shutdown = asyncio.get_running_loop().create_task(self.shutdown())
        else:
            self._hurry.set()

    async def shutdown(self) -> None:
        """Readiness turns 503; inbound listeners drain (in sidecar mode after a graceful hold
        while callers move away) while outbound ones keep serving until the application has
        exited, then those drain too; then the end (``DrainHold``)."""
        self._begin_drain()
        # Listeners a /drain_listeners already drains are left to it (and cut at close);
        # after ``/drain_listeners?inboundonly`` (Istio's agent sends it first) the outbound
        # ones still get their hold.
        inbound, outbound = ([lr for lr in group if not lr.draining] for group in self._by_direction())
        if self.termination.graceful_inbound:
            inbound_drained = asyncio.ensure_future(self._graceful_drain(inbound, "inbound"))
        else:
            inbound_drained = asyncio.ensure_future(self._drain(inbound, "inbound "))
        if outbound:
            await self._hold(outbound, "outbound", _outbound_activity)
            await self._drain(outbound, "outbound ")
        await inbound_drained
        await self.close()

    async def _graceful_drain(self, listeners: list[ListenerRuntime], which: str) -> int:
        """Envoy's graceful drain: ``listeners`` keep accepting in drain mode (every response
        closes its connection, HTTP/2 gets GOAWAY after one) until the hold ends, then drain."""
        if not listeners:
            return 0
        for lr in listeners:
            lr.begin_graceful_drain()
        await self._hold(listeners, which or "draining", _inbound_activity)
        return await self._drain(listeners, which + " " if which else "")

    async def _hold(
        self,
        listeners: list[ListenerRuntime],
        which: str,
        activity: Callable[[list[ListenerRuntime]], tuple[int, int]],
    ) -> None:
        """Keep ``listeners`` accepting until their ``DrainHold`` ends."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        hold = DrainHold(self.termination, began, activity(listeners)[1])
        log.info(
            "%s listeners accept on until no traffic for %.1fs, %.1fs at most, or a second signal",
            which,
            self.termination.quiet,
            self.termination.drain_duration,
        )
        while True:
            if self._hurry.is_set():
                hold.hurry()
            at = hold.observe(loop.time(), *activity(listeners))
            if at is None:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), max(0.0, at - loop.time()))
        assert hold.ended is not None
        log.info("%s hold ended after %.2fs: %s", which, loop.time() - began, hold.ended.value)

    async def close(self) -> None:
        self.ready = False
        self.store.server["live"] = 0
        if self._reporter is not None:
            self._reporter.cancel()
        if self.xds is not None:
            await self.xds.close()
        await self.overload.close()
        asyncio.get_running_loop().set_exception_handler(self._default_handler)
        for lr in (*self.listeners.values(), *self.retired):
            lr.close()
            for conn in list(lr.connections):
                conn.abort()
        self.admin.close()
        if self._ticker is not None:
            self._ticker.cancel()
        await self.tracers.close()
        await self.clusters.close()
        self.access_logs.close()
        self.stopped.set()

    async def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT (``terminate``) or /quitquitquit has shut the proxy down."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.terminate)
        await self.stopped.wait()


_ACCEPT_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def _paths(files: TlsFiles) -> Paths:
    return files.certificate_chain, files.private_key, files.trusted_ca


def _pem(tls: TlsContext) -> Pem:
    return tls.cfg.certificate_chain, tls.cfg.private_key, tls.cfg.trusted_ca


def _rotate_chain(lr: ListenerRuntime, chain: FilterChain, material: CertMaterial) -> None:
    lr.rotate(chain, material.chain_pem, material.key_pem, material.bundle_pem)


def _rotate_cluster(rt: ClusterRuntime, material: CertMaterial) -> None:
    rt.rotate(material.chain_pem, material.key_pem, material.bundle_pem)


async def _build_route_tables(listeners: Iterable[Listener]) -> list[RouteTable]:
    """The route tables of ``listeners``' http_connection_managers, built a route per step and
    yielding to the event loop every ``SLICE``: a thousand routes take 10-30 ms to build."""
    tables: dict[int, RouteTable] = {}
    started = time.perf_counter()
    for ln in listeners:
        chains = ln.filter_chains + ((ln.default_filter_chain,) if ln.default_filter_chain else ())
        for chain in chains:
            f = chain.filter
            if not isinstance(f, HttpConnectionManager) or id(f.route_config) in tables:
                continue
            steps = RouteTable.build(f.route_config)
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    tables[id(f.route_config)] = done.value
                    break
                if time.perf_counter() - started > SLICE:
                    await asyncio.sleep(0)
                    started = time.perf_counter()
    if tables:
        await asyncio.sleep(0)  # the clusters' update starts a slice of its own
    return list(tables.values())


def _outbound_activity(listeners: list[ListenerRuntime]) -> tuple[int, int]:
    """Rule 2 outbound: connections open (or pending a codec) now; connections accepted so far."""
    return (
        sum(len(lr.connections) + lr.pending for lr in listeners),
        sum(lr.stats.downstream_pre_cx_total for lr in listeners),
    )


def _inbound_activity(listeners: list[ListenerRuntime]) -> tuple[int, int]:
    """Rule 2 inbound: exchanges in progress now (a request, a TCP relay, a handshake); requests
    started so far. An idle keep-alive connection, or one that never sends, is not traffic."""
    return (
        sum(lr.pending + sum(not conn.is_idle() for conn in lr.connections) for lr in listeners),
        sum(
            ctx.stats.downstream_rq_total
            for lr in listeners
            for ctx in lr.contexts.values()
            if isinstance(ctx, HttpContext)
        ),
    )
