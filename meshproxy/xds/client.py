"""The ADS client's I/O shell: one gRPC stream to the control plane, kept up forever.

Owns the channel to the ``ads_config`` cluster (over TLS when the static cluster has an
``UpstreamTlsContext``: the controlplane's certificate verified against its ``trusted_ca`` and
its ``sni`` or the endpoint's host; a failed verification is logged with its cause and retried
with the stream's backoff), the bidirectional stream (state of the world or
delta), reconnecting with exponential backoff and full jitter, the time slicing that keeps a big
update from stalling the event loop, and handing each assembled ``Config`` to
``Server.apply``. Every protocol decision (what to request, ACK or NACK, warming) is
``state.XdsState``'s; this module holds no policy beyond timing.
Must not be imported on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Protocol, TypeVar

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from meshproxy import __version__
from meshproxy.config.model import Cluster, Config, DynamicResources
from meshproxy.errors import ConfigError
from meshproxy.identity.grpc_tls import describe_rpc_error
from meshproxy.stats import XdsStats
from meshproxy.upstream.keepalive import grpc_keepalive_options
from meshproxy.xds import files
from meshproxy.xds.resources import SHORT
from meshproxy.xds.state import Response, Staged, XdsState

log = logging.getLogger("meshproxy.xds")
T = TypeVar("T")

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# Longest stretch the client computes without yielding to the event loop (seconds).
SLICE = 0.005
TIMER_POLL = 1.0


def backoff_delay(
    attempt: int, rng: random.Random, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP
) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, min(cap, base * (2 ** min(attempt, 32))))


class Target(Protocol):
    """What the client hands configurations to: the ``Server``, or with ``--concurrency`` the
    worker supervisor (``meshproxy/workers/``), which forwards them to every worker."""

    config: Config
    ready: bool

    async def apply(self, config: Config) -> None: ...


class AdsClient:
    def __init__(
        self,
        server: Target,
        dynamic: DynamicResources,
        *,
        rng: random.Random,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        self.server = server
        self.dynamic = dynamic
        self.rng = rng
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.state = XdsState(server.config, dynamic, build=__version__)
        self.stats = XdsStats()
        self.connected = False
        self.last_error = ""
        self.lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        # ADS over gRPC, or listeners and clusters from files (path_config_source).
        source: Coroutine[Any, Any, None] = self._run() if self.dynamic.ads_cluster else files.follow(self)
        self._tasks = [loop.create_task(source), loop.create_task(self._timers())]
        self._mark_ready()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    @property
    def channel(self) -> grpc.aio.Channel | None:
        """The channel of a stream that is up (others, such as the inventory reporter, share it)."""
        return self._channel if self.connected else None

    # ------------------------------------------------------------------ the stream

    async def _run(self) -> None:
        attempt = 0
        while True:
            got_response = False
            try:
                got_response = await self._stream()
                self.last_error = "the control plane closed the stream"
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {describe_rpc_error(exc, self._trust())}"
            except Exception as exc:  # a bug here must not end the client: the proxy keeps serving
                log.exception("ADS stream failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
            self.connected = False
            self._call = None
            # A fresh channel per attempt: gRPC's own reconnect backoff (growing to 120 s) would
            # otherwise stack on ours and keep a restarted control plane unreached for minutes.
            channel, self._channel = self._channel, None
            if channel is not None:
                await channel.close()
            self.stats.stream_failures += 1
            attempt = 0 if got_response else attempt + 1
            delay = backoff_delay(attempt, self.rng, self.backoff_base, self.backoff_cap)
            log.warning(
                "ADS stream to %s ended (%s); reconnecting in %.2fs", self._target(), self.last_error, delay
            )
            await asyncio.sleep(delay)

    async def _stream(self) -> bool:
        """One stream until it ends; True if it delivered at least one response."""
        if self._channel is None:
            self._channel = self._open_channel()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        call = stub.DeltaAggregatedResources() if self.dynamic.delta else stub.StreamAggregatedResources()
        self.stats.streams += 1
        async with self.lock:
            self.state.connected(time.monotonic())
            await self._flush(call)
        self._call = call
        got = False
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                return got
            got = True
            self.connected = True
            self.stats.responses += 1
            async with self.lock:
                await self.handle(response)
                await self._flush(call)

    async def _flush(self, call: Any) -> None:
        for request in self.state.requests_to_send():
            await call.write(request)

    async def handle(self, response: Response, also: Callable[[Staged], list[str]] | None = None) -> None:
        """One response through the state machine (rules 2 and 3); ``also`` adds problems of
        its own (the file source's: what only ADS could complete)."""
        state = self.state
        staged = state.stage(response)
        if staged is None:
            log.warning("ADS: ignoring a response of unrequested type %s", response.type_url)
            return
        await self._sliced(staged.work())
        if not staged.problems and also is not None:
            staged.problems.extend(also(staged))
        if not staged.problems:
            state.check(staged)
        if staged.problems:
            return self._reject(staged, staged.problems)
        assembly = await self._sliced(state.candidate_steps(staged))
        try:
            await self._apply(assembly.config)
        except ConfigError as exc:
            return self._reject(staged, exc.problems)
        state.accept(staged, assembly, time.monotonic())
        self.stats.acks += 1
        log.info(
            "ADS: accepted %s version %s (%d resource(s))%s",
            SHORT[staged.type_url],
            staged.version_info or "-",
            len(staged.compiled),
            f"; warming: {', '.join(state.warming)}" if state.warming else "",
        )
        self._mark_ready()

    async def _sliced(self, steps: Generator[None, None, T]) -> T:
        """Runs ``steps`` to the end, yielding to the event loop once a slice exceeds ``SLICE``,
        and once more at the end, so the next phase starts a slice of its own."""
        started = time.perf_counter()
        while True:
            try:
                next(steps)
            except StopIteration as done:
                self.stats.max_slice = max(self.stats.max_slice, time.perf_counter() - started)
                await asyncio.sleep(0)
                return done.value
            elapsed = time.perf_counter() - started
            if elapsed > SLICE:
                self.stats.max_slice = max(self.stats.max_slice, elapsed)
                await asyncio.sleep(0)
                started = time.perf_counter()

    def _reject(self, staged: Staged, problems: list[str]) -> None:
        self.state.reject(staged, problems)
        self.stats.nacks += 1
        log.error("ADS: %s", self.state.types[staged.type_url].last_nack)

    async def _apply(self, config: Any) -> None:
        if config == self.server.config:
            return
        await self.server.apply(config)
        self.stats.applied += 1

    def _mark_ready(self) -> None:
        if self.state.complete and not self.server.ready:
            self.server.ready = True
            log.info("ADS: first complete configuration applied (%s); ready", self.state.version)

    async def _timers(self) -> None:
        """Initial-fetch timeouts: a warming cluster or listener stops waiting (state Rule 6)."""
        while True:
            due = self.state.next_timer()
            now = time.monotonic()
            await asyncio.sleep(TIMER_POLL if due is None else min(TIMER_POLL, max(0.0, due - now)))
            async with self.lock:
                assembly = self.state.handle_timer(time.monotonic())
                if assembly is not None:
                    log.warning("ADS: initial fetch timed out; going on without it (%s)", self.state.version)
                    try:
                        await self._apply(assembly.config)
                    except ConfigError as exc:
                        log.error("ADS: applying after the initial fetch timeout failed: %s", exc)
                    self._mark_ready()

    # ------------------------------------------------------------------ the channel

    def _cluster(self) -> Cluster:
        cluster = self.server.config.cluster(self.dynamic.ads_cluster)
        assert cluster is not None  # the bootstrap compiler checked it is a static cluster
        return cluster

    def _target(self) -> str:
        for locality in self._cluster().localities:
            for ep in locality.endpoints:
                host = f"[{ep.address.host}]" if ":" in ep.address.host else ep.address.host
                return f"{host}:{ep.address.port}"
        return "(no endpoint)"

    def _files(self) -> str:
        return ", ".join(path for path in (self.dynamic.cds_path, self.dynamic.lds_path) if path)

    def _trust(self) -> str:
        """The trust bundle the controlplane's certificate is verified against, for log lines."""
        cluster = self._cluster()
        if cluster.tls_files is not None and cluster.tls_files.trusted_ca:
            return cluster.tls_files.trusted_ca
        return f"(trusted_ca of cluster {cluster.name})"

    def _open_channel(self) -> grpc.aio.Channel:
        cluster = self._cluster()
        target = self._target()
        # Keepalive pings only when the cluster asks for tcp_keepalive, and then no more often
        # than servers accept by default (upstream/keepalive.py). A big mesh's CDS/EDS response
        # exceeds gRPC's 4 MiB default receive limit.
        options: list[tuple[str, Any]] = [
            ("grpc.enable_retries", 0),
            ("grpc.max_receive_message_length", 1 << 28),
        ]
        if cluster.tcp_keepalive is not None:
            options += grpc_keepalive_options(cluster.tcp_keepalive)
        if cluster.tls is None:
            return grpc.aio.insecure_channel(target, options=options)
        tls = cluster.tls
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.trusted_ca,
            private_key=tls.private_key or None,
            certificate_chain=tls.certificate_chain or None,
        )
        if tls.sni:
            options.append(("grpc.ssl_target_name_override", tls.sni))
        return grpc.aio.secure_channel(target, credentials, options=options)

    def status(self) -> dict[str, Any]:
        """For the admin interface: the stream, each type's versions, warming, the last NACKs."""
        return {
            "connected": self.connected,
            "target": self._target() if self.dynamic.ads_cluster else self._files(),
            "api_type": ("DELTA_GRPC" if self.dynamic.delta else "GRPC")
            if self.dynamic.ads_cluster
            else "path_config_source",
            "last_error": self.last_error,
            "complete": self.state.complete,
            "warming": list(self.state.warming),
            "stats": {name: getattr(self.stats, name) for name in XdsStats.STATS},
            "types": {
                SHORT[url]: {
                    "version_info": ts.version_info,
                    "nonce": ts.nonce,
                    "resources": sorted(ts.resources),
                    "subscribed": "*" if ts.wildcard else sorted(ts.names),
                    "nacks": ts.nacks,
                    "last_nack": ts.last_nack,
                }
                for url, ts in self.state.types.items()
            },
        }
