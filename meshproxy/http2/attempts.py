"""Upstream policy of one HTTP/2 stream: attempts, retries, per-try and stream timeouts.

Owns what ``H2Stream`` does between "a cluster was chosen" and "the response began": the
max_requests breaker (503 ``UO`` with ``x-envoy-overloaded``), each attempt's host pick and
pool request, outlier feedback (HTTP status, or a gRPC status mapped the way Envoy's router
does), retries by the route's ``RetryRules`` (5xx, reset, refused-stream, connect-failure,
per-try timeout, and gRPC conditions read from ``grpc-status``) with the request body kept
for a replay up to ``retry_buffer_limit``, ``x-envoy-attempt-count``, the per-try timeout,
the route / ``grpc-timeout`` / ``max_stream_duration`` deadline, and ``stream_idle_timeout``.

It is ``H2Stream``'s base class, kept apart so ``stream.py`` reads as the relay and this
module as the policy; it relies on the attributes ``H2Stream`` defines. Must not touch h2
frames directly: sending goes through the upstream object the pool attaches.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Any

from h2.errors import ErrorCodes

from meshproxy.http.stream import OVERLOADED
from meshproxy.http2 import grpc
from meshproxy.http2.connection import Half
from meshproxy.http2.pool import pool_for
from meshproxy.router.hashing import request_hash
from meshproxy.router.retry import grpc_status_of

if TYPE_CHECKING:
    from asyncio import TimerHandle

    from meshproxy.http.plan import RoutePlan
    from meshproxy.router.retry import Failure, RetryRules
    from meshproxy.router.table import RouteDecision
    from meshproxy.upstream.cluster import ClusterRuntime

ATTEMPT_COUNT = b"x-envoy-attempt-count"


class Attempts:
    __slots__ = (
        "admitted",
        "attempt",
        "attempt_start",
        "body_copy",
        "body_copy_size",
        "deadline",
        "grpc_deadline",
        "hash",
        "in_flight",
        "retry",
        "retry_held",
        "retry_timer",
        "sweep_mark",
        "sweep_time",
        "try_timer",
    )

    # Attributes of H2Stream this base class uses (declared for readers and type checkers).
    if TYPE_CHECKING:
        cluster: Any
        conn: Any
        ctx: Any
        decision: Any
        finished: bool
        grpc: bool
        grpc_timeout: float | None
        headers: list[tuple[bytes, bytes]]
        host: Any
        plan: Any
        pool: Any
        request_complete: bool
        response_started: bool
        rx_bytes: int
        status: int
        timer: TimerHandle | None
        tx_bytes: int
        up: Any
        up_half: Half
        up_headers: list[tuple[bytes, bytes]]
        url: bytes

        def local_reply(self, status: int, body: bytes, flags: str, **kw: Any) -> None: ...
        def _drop_upstream(self, code: int) -> None: ...
        def _request_sent(self) -> None: ...
        def _ack_down(self, size: int) -> None: ...
        def _upstream_headers(
            self, plan: RoutePlan, decision: RouteDecision, authority: bytes
        ) -> list[tuple[bytes, bytes]]: ...

    def _init_attempts(self, now: float) -> None:
        self.admitted = False
        self.attempt = 1
        self.attempt_start = now
        self.retry: RetryRules | None = None
        self.retry_held = False
        self.retry_timer: TimerHandle | None = None
        self.try_timer: TimerHandle | None = None
        self.body_copy: list[bytes] | None = None
        self.body_copy_size = 0
        self.hash: int | None = None
        self.in_flight = False
        self.deadline = 0.0  # loop time the armed ``timer`` fires at
        self.grpc_deadline = False  # grpc-timeout replaced the route timeout
        self.sweep_mark = -1
        self.sweep_time = 0.0

    # ------------------------------------------------------------------ attempts

    def forward(
        self, cluster: ClusterRuntime, plan: RoutePlan, decision: RouteDecision, authority: bytes
    ) -> None:
        """Routed to ``cluster``: pick a host, pass the breaker, start the first attempt."""
        self.plan = plan
        self.decision = decision
        if plan.hash_policy and cluster.hashing:
            self.hash = request_hash(plan.hash_policy, self.headers, authority, self.url, self.conn.peer_ip)
        host = cluster.pick(self.hash)
        if host is None:
            return self.local_reply(503, b"no healthy upstream", "UH")
        if not cluster.admit_request():
            return self.local_reply(503, b"upstream overflow: max_requests", "UO", extra=[OVERLOADED])
        self.admitted = True
        self.cluster = cluster
        self.host = host
        self.up_headers = self._upstream_headers(plan, decision, authority)
        cluster.stats.upstream_rq_total += 1
        cluster.stats.upstream_rq_active += 1
        if plan.retry is not None:
            self.retry = plan.retry
            self.body_copy = []
            self.up_headers.append((ATTEMPT_COUNT, b"1"))  # kept last: a retry rewrites it
        if plan.grpc_timeout_max is not None or plan.max_stream_duration > 0:
            self._arm_stream_timers(self.grpc_timeout)
        self._send()
        return None

    def _send(self) -> None:
        """Start an attempt on ``self.host``: an HTTP/2 pool slot or an HTTP/1.1 connection."""
        host, cluster = self.host, self.cluster
        host.rq_total += 1
        host.rq_active += 1
        self.in_flight = True
        if cluster.config.http2 is not None:
            self.pool = pool_for(cluster, host)
        else:
            from meshproxy.http2.to_http1 import Http1Upstream

            self.pool = Http1Upstream(cluster, host)
        if self.request_complete:
            self._arm_try_timer()
        self.pool.request(self)

    def _arm_try_timer(self) -> None:
        plan = self.plan
        if plan.per_try_timeout > 0 and self.try_timer is None and self.in_flight:
            self.try_timer = self.conn.loop.call_later(plan.per_try_timeout, self._on_try_timeout)

    def _on_try_timeout(self) -> None:
        self.try_timer = None
        if self.finished or self.response_started:
            return
        self.cluster.stats.upstream_rq_per_try_timeout += 1
        self._failed("per-try-timeout", 504, b"upstream request timeout", "UT")

    def _end_attempt(self) -> None:
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        if self.in_flight:
            self.in_flight = False
            self.host.rq_active -= 1

    def _keep_body(self, data: bytes) -> None:
        """Keep request DATA for a replay; past the bound the request is no longer retried."""
        self.body_copy_size += len(data)
        if self.body_copy_size > self.plan.retry_buffer_limit:
            self.body_copy = None
        else:
            self.body_copy.append(data)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ failures and retries

    def _failed(self, kind: Failure, status: int, body: bytes, flags: str) -> None:
        """An attempt failed before the response began: retry it or answer locally."""
        cluster, host = self.cluster, self.host
        if cluster is not None and host is not None:
            cluster.host_failed(host)
        rules = self.retry
        if rules is None or not rules.failure_retriable(kind) or not self._schedule_retry():
            self.local_reply(status, body, flags)

    def _retriable_response(self, status: int, headers: list[tuple[bytes, bytes]], end: bool) -> bool:
        """Response headers arrived: True when a retry was scheduled instead of relaying them."""
        rules = self.retry
        assert rules is not None
        code = None
        if end and rules.grpc_statuses:  # a trailers-only response carries grpc-status here
            code = grpc_status_of(next((v for n, v in headers if n == b"grpc-status"), None))
        return rules.status_retriable(status, code) and self._schedule_retry()

    def _schedule_retry(self) -> bool:
        rules, cluster = self.retry, self.cluster
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
        self._drop_upstream(ErrorCodes.CANCEL)
        self.up = None
        self._end_attempt()
        cluster.stats.upstream_rq_retry += 1
        self.status = 0
        delay = rules.backoff(self.attempt - 1, self.ctx.rng)
        self.retry_timer = self.conn.loop.call_later(delay, self._retry)
        return True

    def _retry(self) -> None:
        self.retry_timer = None
        if self.finished:
            return
        rules, cluster = self.retry, self.cluster
        assert rules is not None
        self.attempt += 1
        self.attempt_start = monotonic()
        host = cluster.pick(self.hash, self.host if rules.policy.retry_other_hosts else None)
        if host is None:
            return self.local_reply(503, b"no healthy upstream", "UH")
        self.host = host
        self.up_headers[-1] = (ATTEMPT_COUNT, b"%d" % self.attempt)
        # A fresh request half: the whole body again from the copy. Bytes still queued from the
        # last attempt are in the copy too, so their window goes back to the client now.
        old = self.up_half
        pending = sum(flow for _, flow in old.chunks)
        old.chunks.clear()
        old.done = True
        if pending:
            self._ack_down(pending)
        half = self.up_half = Half(self._request_sent)
        half.ack = self._ack_down
        half.chunks.extend((data, 0) for data in self.body_copy or ())
        half.end = old.end
        half.trailers = old.trailers
        self._send()

    # ------------------------------------------------------------------ outlier feedback

    def _observe(self, status: int, grpc_status: bytes | None = None) -> None:
        """Feed outlier detection; a gRPC status counts as Envoy's router maps it to HTTP."""
        if grpc_status is not None:
            code = grpc_status_of(grpc_status)
            if code is not None:
                status = grpc.http_status_for(code)
        self.cluster.observe(self.host, status, monotonic() - self.attempt_start)

    # ------------------------------------------------------------------ timeouts

    def _arm_at(self, deadline: float) -> None:
        """Run ``_on_timeout`` at loop time ``deadline`` unless an earlier one is armed."""
        if self.timer is not None:
            if self.deadline <= deadline:
                return
            self.timer.cancel()
        self.deadline = deadline
        self.timer = self.conn.loop.call_at(deadline, self._on_timeout)

    def _arm_stream_timers(self, grpc_timeout: float | None) -> None:
        """At the start: grpc-timeout (replaces the route timeout) and max_stream_duration."""
        plan = self.plan
        now = self.conn.loop.time()
        limit = plan.grpc_timeout_max
        if self.grpc and grpc_timeout is not None and limit is not None:
            self.grpc_deadline = True
            self._arm_at(now + (grpc_timeout if limit <= 0 else min(grpc_timeout, limit)))
        if plan.max_stream_duration > 0:
            self._arm_at(now + plan.max_stream_duration)

    def _arm_route_timeout(self) -> None:
        """The request is complete: the route timeout runs from now (Envoy's)."""
        plan = self.plan
        if plan is not None and plan.timeout > 0 and not self.grpc_deadline and not self.finished:
            self._arm_at(self.conn.loop.time() + plan.timeout)

    def _on_timeout(self) -> None:
        self.timer = None
        if self.finished:
            return
        if self.cluster is not None:
            self.cluster.stats.upstream_rq_timeout += 1
        self.ctx.stats.downstream_rq_timeout += 1
        self.local_reply(504, b"upstream request timeout", "UT")

    def check_idle(self, now: float, limit: float) -> None:
        """stream_idle_timeout, from the byte counters (called about once a second)."""
        mark = self.rx_bytes + self.tx_bytes + self.status
        if mark != self.sweep_mark:
            self.sweep_mark = mark
            self.sweep_time = now
        elif now - self.sweep_time > limit and not self.finished:
            self.ctx.stats.downstream_rq_idle_timeout += 1
            self.local_reply(504 if self.request_complete else 408, b"stream timeout", "SI")
