"""Active health checking of one cluster's hosts: HTTP, TCP and gRPC health v1 probes.

Owns the probe loops (one task per host per configured check, so at most one probe per host per
check is in flight), their per-host results for ``/clusters`` and the ``health_check.*``
counters. ``CheckState`` is the sans-I/O part: the threshold state machine, fed results. The
shell only runs probes, on the loop's clock, with jitter from the injected ``rng``; it never
raises out of a loop (every unexpected error is logged and counted as a network failure). Must
not know about LB or routing: it reports transitions through ``on_change(key, healthy)``.

Envoy semantics followed (``source/common/upstream/health_checker_impl.cc``, the HealthCheck
proto docs):

- A host starts as "failed active health check" (``status`` is ``"unknown"``, and it should not
  take traffic) and the first probe runs at once. The first result decides without thresholds:
  a pass makes the host healthy immediately (Envoy's ``first_check``), a failure unhealthy.
- Afterwards ``healthy_threshold`` consecutive passes bring an unhealthy host back. A *network*
  failure (refused, reset, timeout, unreadable answer, gRPC error status) needs
  ``unhealthy_threshold`` consecutive failures; an explicit "unhealthy" answer (an HTTP status
  outside ``expected_statuses``, gRPC ``NOT_SERVING``) marks the host unhealthy at once, as
  Envoy does for statuses that are neither expected nor retriable.
- Several checks on one cluster: a host is healthy only while every check passes.
- The HTTP ``Host`` header and the gRPC ``:authority`` default to the cluster name. The next probe
  starts ``interval`` after the previous one ended, plus ``uniform(0, interval_jitter)`` plus
  ``uniform(0, interval * interval_jitter_percent / 100)``.
- Not done: probes are plaintext (no cluster TLS), a new connection per probe (no reuse),
  ``no_traffic_interval`` is not applied (the checker does not see traffic).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from meshproxy.config.model import SocketAddress
from meshproxy.config.policy import HealthCheck

if TYPE_CHECKING:
    import grpc.aio

log = logging.getLogger("meshproxy.upstream.health_check")

Status = Literal["healthy", "unhealthy", "unknown"]
_MAX_READ = 64 * 1024  # bound on what one probe buffers (status line, TCP receive payload)


class HealthCheckStats:
    """Envoy's ``cluster.<name>.health_check.*``."""

    __slots__ = ("attempt", "failure", "healthy", "network_failure", "success")

    def __init__(self) -> None:
        self.attempt = 0
        self.success = 0
        self.failure = 0
        self.network_failure = 0
        self.healthy = 0  # gauge: hosts currently healthy


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one probe. ``network`` failures count toward ``unhealthy_threshold``."""

    ok: bool
    network: bool
    detail: str  # "200", "SERVING", "timeout", "ConnectionRefusedError: ...", ...
    at: float  # loop time the probe finished


class CheckState:
    """One host under one check: Envoy's threshold state machine (sans-I/O)."""

    __slots__ = ("failures", "healthy", "last", "successes")

    def __init__(self) -> None:
        self.healthy: bool | None = None  # None: not checked yet (failed active HC in Envoy)
        self.successes = 0
        self.failures = 0
        self.last: CheckResult | None = None

    def apply(self, result: CheckResult, check: HealthCheck) -> bool:
        """Feed one result; True when ``healthy`` changed."""
        self.last = result
        if result.ok:
            self.failures = 0
            if self.healthy:
                return False
            self.successes += 1
            if self.healthy is None or self.successes >= max(1, check.healthy_threshold):
                self.healthy, self.successes = True, 0
                return True
            return False
        self.successes = 0
        if self.healthy is None:
            self.healthy = False
            return True
        if not self.healthy:
            return False
        self.failures += 1
        if not result.network or self.failures >= max(1, check.unhealthy_threshold):
            self.healthy, self.failures = False, 0
            return True
        return False


class _Host:
    __slots__ = ("address", "channel", "states", "status", "tasks")

    def __init__(self, address: SocketAddress, checks: int) -> None:
        self.address = address
        self.states = [CheckState() for _ in range(checks)]
        self.status: Status = "unknown"
        self.tasks: list[asyncio.Task[None]] = []
        self.channel: grpc.aio.Channel | None = None


class HealthChecker:
    """All active checks of one cluster; ``set_hosts`` follows membership."""

    def __init__(
        self,
        cluster_name: str,
        checks: tuple[HealthCheck, ...],
        on_change: Callable[[str, bool], None],
        rng: random.Random,
    ) -> None:
        self.cluster_name = cluster_name
        self.checks = checks
        self.on_change = on_change
        self.rng = rng
        self.stats = HealthCheckStats()
        self._hosts: dict[str, _Host] = {}
        self._started = False
        self._closing: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ membership

    def set_hosts(self, hosts: list[tuple[str, SocketAddress]]) -> None:
        """Install the host set: new hosts start unknown (and are probed at once when started),
        retained ones keep their state, removed ones stop being probed."""
        wanted = dict(hosts)
        for key in [k for k in self._hosts if k not in wanted]:
            self._drop(self._hosts.pop(key))
        for key, address in wanted.items():
            if key not in self._hosts:
                host = self._hosts[key] = _Host(address, len(self.checks))
                if self._started:
                    self._spawn(key, host)
        self.stats.healthy = sum(1 for h in self._hosts.values() if h.status == "healthy")

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for key, host in self._hosts.items():
            self._spawn(key, host)

    async def close(self) -> None:
        self._started = False
        hosts = list(self._hosts.values())
        self._hosts.clear()
        for host in hosts:
            self._drop(host)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def status(self, key: str) -> Status:
        host = self._hosts.get(key)
        return "unknown" if host is None else host.status

    def last_results(self, key: str) -> list[CheckResult | None]:
        """The last result of each check for ``key`` (for ``/clusters``)."""
        host = self._hosts.get(key)
        return [] if host is None else [s.last for s in host.states]

    def _spawn(self, key: str, host: _Host) -> None:
        loop = asyncio.get_running_loop()
        host.tasks = [
            loop.create_task(self._loop(key, host, i, check), name=f"health_check {self.cluster_name} {key}")
            for i, check in enumerate(self.checks)
        ]

    def _drop(self, host: _Host) -> None:
        for task in host.tasks:
            task.cancel()
        pending: list[asyncio.Task[None]] = list(host.tasks)
        if host.channel is not None:
            pending.append(asyncio.get_running_loop().create_task(host.channel.close()))
            host.channel = None
        if pending:
            waiter = asyncio.get_running_loop().create_task(_quietly(pending))
            self._closing.add(waiter)
            waiter.add_done_callback(self._closing.discard)

    # ------------------------------------------------------------------ probe loop

    async def _loop(self, key: str, host: _Host, index: int, check: HealthCheck) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.stats.attempt += 1
            try:
                async with asyncio.timeout(check.timeout):
                    ok, network, detail = await self._probe(host, check)
            except TimeoutError:
                ok, network, detail = False, True, "timeout"
            except OSError as exc:
                ok, network, detail = False, True, f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a probe must never end the loop
                log.exception("health check %s %s: probe error", self.cluster_name, key)
                ok, network, detail = False, True, f"error: {type(exc).__name__}: {exc}"
            self._record(key, host, index, check, CheckResult(ok, network, detail, loop.time()))
            await asyncio.sleep(self._next_interval(check))

    def _record(self, key: str, host: _Host, index: int, check: HealthCheck, result: CheckResult) -> None:
        stats = self.stats
        if result.ok:
            stats.success += 1
        else:
            stats.failure += 1
            if result.network:
                stats.network_failure += 1
        if not host.states[index].apply(result, check):
            return
        states = [s.healthy for s in host.states]
        status: Status = "unhealthy" if False in states else "unknown" if None in states else "healthy"
        if status == host.status or status == "unknown":
            return
        host.status = status
        stats.healthy = sum(1 for h in self._hosts.values() if h.status == "healthy")
        log.info("health check %s %s: %s (%s)", self.cluster_name, key, status, result.detail)
        try:
            self.on_change(key, status == "healthy")
        except Exception:
            log.exception("health check %s %s: on_change failed", self.cluster_name, key)

    def _next_interval(self, check: HealthCheck) -> float:
        wait = check.interval
        if check.interval_jitter > 0:
            wait += self.rng.uniform(0.0, check.interval_jitter)
        if check.interval_jitter_percent > 0:
            wait += self.rng.uniform(0.0, check.interval * check.interval_jitter_percent / 100.0)
        return wait

    # ------------------------------------------------------------------ probes

    async def _probe(self, host: _Host, check: HealthCheck) -> tuple[bool, bool, str]:
        """(ok, network failure, detail); raises OSError / TimeoutError for network failures."""
        if check.kind == "http":
            return await self._http(host.address, check)
        if check.kind == "tcp":
            return await _tcp(host.address, check)
        return await self._grpc(host, check)

    async def _http(self, address: SocketAddress, check: HealthCheck) -> tuple[bool, bool, str]:
        reader, writer = await asyncio.open_connection(address.host, address.port, limit=_MAX_READ)
        try:
            authority = check.http_host or self.cluster_name
            writer.write(
                f"GET {check.http_path} HTTP/1.1\r\nhost: {authority}\r\n"
                "user-agent: meshproxy-health-checker\r\nconnection: close\r\n\r\n".encode("latin-1")
            )
            line = await reader.readline()
        except ValueError:  # a status line longer than the read bound
            return False, True, "status line too long"
        finally:
            writer.close()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            return False, True, f"bad status line {line[:40]!r}"
        code = int(parts[1])
        ok = any(start <= code < end for start, end in check.expected_statuses)
        return ok, False, str(code)

    async def _grpc(self, host: _Host, check: HealthCheck) -> tuple[bool, bool, str]:
        import grpc
        import grpc.aio
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        if host.channel is None:
            authority = check.grpc_authority or self.cluster_name
            host.channel = grpc.aio.insecure_channel(
                f"{host.address.host}:{host.address.port}", options=[("grpc.default_authority", authority)]
            )
        stub = health_pb2_grpc.HealthStub(host.channel)
        try:
            reply: Any = await stub.Check(
                health_pb2.HealthCheckRequest(service=check.grpc_service_name), timeout=check.timeout
            )
        except grpc.aio.AioRpcError as exc:
            return False, True, f"grpc {exc.code().name}"
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return reply.status == health_pb2.HealthCheckResponse.SERVING, False, name


async def _tcp(address: SocketAddress, check: HealthCheck) -> tuple[bool, bool, str]:
    reader, writer = await asyncio.open_connection(address.host, address.port, limit=_MAX_READ)
    try:
        if check.tcp_send:
            writer.write(check.tcp_send)
        if not check.tcp_receive:
            return True, False, "connected"
        # Envoy's matcher: each expected segment, in order, somewhere after the previous one.
        buffered = b""
        while len(buffered) <= _MAX_READ:
            chunk = await reader.read(_MAX_READ)
            if not chunk:
                return False, True, "closed before the expected bytes"
            buffered += chunk
            if _matches(buffered, check.tcp_receive):
                return True, False, "matched"
        return False, True, "expected bytes not found"
    finally:
        writer.close()


def _matches(data: bytes, segments: tuple[bytes, ...]) -> bool:
    start = 0
    for segment in segments:
        at = data.find(segment, start)
        if at < 0:
            return False
        start = at + len(segment)
    return True


async def _quietly(tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)
