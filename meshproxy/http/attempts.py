"""Upstream policy of one HTTP/1.1 stream: attempts, retries, timeouts and the local rate limit.

Owns what ``Stream`` does between "a host was picked" and "the response began", and the clocks
around it: each attempt's start on a pooled or new connection (and a waiting request taking a
connection the cluster hands it), retries by the route's ``RetryRules`` with the request body
replayed from its bounded copy, the back-off, the per-try timeout, the route timeout narrowed by
``grpc-timeout`` and ``max_stream_duration``, the stream idle timeout, and the local rate limit.

It is ``Stream``'s base class, kept apart so ``stream.py`` reads as the relay and this module as
the policy; it relies on the attributes and relay methods ``Stream`` defines (declared below for
type checkers). Must not write to either connection except through those methods.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Any

from meshproxy.http import codec

if TYPE_CHECKING:
    from asyncio import TimerHandle

    from meshproxy.http.downstream import DownstreamConnection, HttpContext
    from meshproxy.http.plan import RoutePlan
    from meshproxy.http.upstream import UpstreamConnection
    from meshproxy.router.retry import Failure, RetryRules
    from meshproxy.upstream.cluster import ClusterRuntime, Host

# Route timeouts of at least this many seconds are kept by the listener's deadline tick.
COARSE_TIMEOUT = 1.0


class Attempts:
    __slots__ = ()

    if TYPE_CHECKING:
        conn: DownstreamConnection
        ctx: HttpContext
        plan: RoutePlan | None
        cluster: ClusterRuntime | None
        host: Host | None
        retry: RetryRules | None
        attempt: int
        attempt_start: float
        body_copy: list[bytes] | None
        body_sent: bool
        chunked: bool
        deadline: float
        finished: bool
        hash: int | None
        headers: list[tuple[bytes, bytes]]
        in_flight: bool
        pending: list[bytes] | None
        request_complete: bool
        resp_chunk_down: bool
        resp_close_delimited: bool
        resp_content_length: bool
        resp_lines: list[bytes]
        response_started: bool
        retry_held: bool
        retry_timer: TimerHandle | None
        rx_bytes: int
        start: float
        status: int
        sweep_mark: int
        sweep_time: float
        timer: TimerHandle | None
        try_timer: TimerHandle | None
        tunnel: bool
        tx_bytes: int
        waiting: bool

        def local_reply(self, status: int, body: bytes, flags: str, **kw: Any) -> None: ...
        def attach(self, upstream: UpstreamConnection) -> None: ...
        def connect(self) -> None: ...
        def _drop_upstream(self) -> None: ...

    def _send(self) -> None:
        """Start an attempt on ``self.host``: a pooled connection, or a new one."""
        host = self.host
        cluster = self.cluster
        assert host is not None and cluster is not None
        host.rq_total += 1
        host.rq_active += 1
        self.in_flight = True
        upstream = cluster.acquire(host)
        if upstream is not None:
            self.attach(upstream)  # type: ignore[arg-type]
        else:
            self.connect()

    def _rate_limited(self) -> bool:
        """The local rate limit filter: False lets the request on; True means it was answered."""
        ctx = self.ctx
        cfg = ctx.config.local_rate_limit
        assert cfg is not None and ctx.ratelimit is not None
        if cfg.enabled_percent < 100 and ctx.rng.random() * 100 >= cfg.enabled_percent:
            return False
        if ctx.ratelimit.allow(self.start):
            ctx.stats.local_rate_limit_ok += 1
            return False
        ctx.stats.local_rate_limit_rate_limited += 1
        if cfg.enforced_percent < 100 and ctx.rng.random() * 100 >= cfg.enforced_percent:
            return False
        extra = [(n.encode(), v.encode()) for n, v in cfg.response_headers]
        self.local_reply(cfg.status, b"local_rate_limited", "RL", extra=extra)
        return True

    def _arm_timer(self) -> None:
        # Envoy's route timeout starts when the downstream request is complete. A timeout of
        # a second or more is kept by the listener's deadline tick (to within DEADLINE_TICK),
        # which costs a set insertion instead of an event-loop timer per request.
        plan = self.plan
        if plan is None:
            return
        if plan.per_try_timeout > 0 and self.try_timer is None and self.in_flight:
            self.try_timer = self.conn.loop.call_later(plan.per_try_timeout, self._on_try_timeout)
        if self.timer is not None or self.deadline:
            return
        timeout = plan.timeout
        if plan.grpc_timeout_max is not None or plan.max_stream_duration:
            timeout = self._stream_timeout(plan)
        if timeout <= 0:
            return
        if timeout >= COARSE_TIMEOUT:
            self.deadline = monotonic() + timeout
            self.conn.listener.deadlines.add(self)
        else:
            self.timer = self.conn.loop.call_later(timeout, self._on_timeout)

    def _stream_timeout(self, plan: RoutePlan) -> float:
        """The route timeout narrowed by ``grpc-timeout`` and ``max_stream_duration``."""
        timeout = plan.timeout if plan.timeout > 0 else float("inf")
        if plan.grpc_timeout_max is not None:
            for name, value in self.headers:
                if name == b"grpc-timeout":
                    asked = codec.grpc_timeout(value)
                    if asked is not None:
                        cap = plan.grpc_timeout_max or float("inf")
                        timeout = min(asked, cap)  # grpc-timeout replaces the route timeout
                    break
        if plan.max_stream_duration:
            timeout = min(timeout, plan.max_stream_duration - (monotonic() - self.start))
            timeout = max(timeout, 0.001)
        return 0.0 if timeout == float("inf") else timeout

    def _on_try_timeout(self) -> None:
        self.try_timer = None
        if self.finished or self.response_started:
            return
        assert self.cluster is not None
        self.cluster.stats.upstream_rq_per_try_timeout += 1
        self._failed("per-try-timeout", 504, b"upstream request timeout", "UT")

    def deadline_passed(self) -> None:
        """Called by the listener's deadline tick once ``deadline`` is behind us."""
        self.deadline = 0.0
        self._on_timeout()

    def _on_timeout(self) -> None:
        self.timer = None
        if self.finished:
            return
        if self.cluster is not None:
            self.cluster.stats.upstream_rq_timeout += 1
        self.ctx.stats.downstream_rq_timeout += 1
        self.local_reply(504, b"upstream request timeout", "UT")

    def check_idle(self, now: float, limit: float) -> None:
        """Called by the listener's sweep: no byte either way for ``limit`` seconds ends the stream.

        Progress is read from the byte counters the relay keeps anyway, so the request path
        pays nothing for this timeout.
        """
        mark = self.rx_bytes + self.tx_bytes + self.status
        if mark != self.sweep_mark:
            self.sweep_mark = mark
            self.sweep_time = now
        elif now - self.sweep_time > limit and not self.finished and not self.tunnel:
            self.ctx.stats.downstream_rq_idle_timeout += 1
            if self.request_complete:
                self.local_reply(504, b"stream timeout", "SI")
            else:
                self.local_reply(408, b"stream timeout", "SI")

    def take(self, upstream: UpstreamConnection) -> None:
        """The cluster hands this waiting stream a connection (perhaps to another host)."""
        self.waiting = False
        host = self.host
        if host is not upstream.host and host is not None:
            host.rq_active -= 1
            host = self.host = upstream.host
            host.rq_active += 1
        self.attach(upstream)

    def _failed(self, kind: Failure, status: int, body: bytes, flags: str) -> None:
        """An attempt failed before any response byte went downstream: retry it or reply."""
        cluster, host = self.cluster, self.host
        if cluster is not None and host is not None:
            cluster.host_failed(host)
        rules = self.retry
        if rules is None or not rules.failure_retriable(kind) or not self._schedule_retry():
            self.local_reply(status, body, flags)

    def _schedule_retry(self) -> bool:
        """Retry after the back-off if the policy, the body and the retry breaker allow it."""
        rules = self.retry
        cluster = self.cluster
        assert rules is not None and cluster is not None
        if (
            self.finished
            or self.response_started
            or self.attempt > rules.policy.num_retries
            or self.body_copy is None
            or self.conn.closed
        ):
            return False
        if not self.retry_held:
            if not cluster.admit_retry():
                return False
            self.retry_held = True
        self._drop_upstream()
        self._end_attempt()
        cluster.stats.upstream_rq_retry += 1
        self.resp_lines.clear()
        self.resp_content_length = self.resp_chunk_down = self.resp_close_delimited = False
        self.status = 0
        delay = rules.backoff(self.attempt - 1, self.ctx.rng)
        self.retry_timer = self.conn.loop.call_later(delay, self._retry)
        return True

    def _retry(self) -> None:
        self.retry_timer = None
        if self.finished:
            return
        rules, cluster = self.retry, self.cluster
        assert rules is not None and cluster is not None
        self.attempt += 1
        self.attempt_start = monotonic()
        host = cluster.pick(self.hash, self.host if rules.policy.retry_other_hosts else None)
        if host is None:
            return self.local_reply(503, b"no healthy upstream", "UH")
        self.host = host
        replay = list(self.body_copy or ())
        if self.chunked and self.request_complete:
            replay.append(codec.LAST_CHUNK)
        self.pending = replay or None
        self.body_sent = False
        self._send()

    def _end_attempt(self) -> None:
        timer = self.try_timer
        if timer is not None:
            timer.cancel()
            self.try_timer = None
        if self.in_flight:
            self.in_flight = False
            self.host.rq_active -= 1  # type: ignore[union-attr]
        if self.waiting:
            self.waiting = False
            self.cluster.dequeue(self)  # type: ignore[union-attr]
