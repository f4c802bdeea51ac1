"""One request's policy through the HTTP connection manager (Envoy's HCM and router), sans-I/O.

Owns every per-request decision that is not wire format, for both codecs: the HTTP filter
chain's place (``hcm/filters.py``), route selection (direct responses, redirects, weighted
clusters, cluster lookup, hash policy), the breaker admission of the route's priority, each
attempt's accounting, retries, timeouts, ``grpc-timeout``, outlier feedback and the request's
stats. It takes ``now`` (``time.monotonic()`` seconds: the one clock of the request path) and
draws randomness from the context's ``rng``; it returns decisions (a ``LocalReply`` to send, a
back-off delay to wait, a deadline to arm) and never touches a socket, a timer or a codec. The
HTTP/1.1 and HTTP/2 streams each hold one ``Exchange`` and carry its decisions out
(``Carrier``).

It is one module of about 600 lines on purpose: the rules below share one request's state
(attempt count, retry hold, body copy, deadlines), and splitting them would split that state.

Rules (the numbers are cited in the code):
1. One snapshot: a request reads the filter chain's ``HttpContext`` (routes) it started on and
   the ``ClusterRuntime`` it was routed to at its start; retries never look a cluster up again.
2. The HTTP filters run between the route match and the router's action (``match``, then
   ``request_filters``, then ``route``), as Envoy's filters see the route before the router
   acts; their response hooks run on every response, local replies included, after the
   route's response mutations; their end hooks at the end, before the access record.
3. Routing: the overload manager's stop_accepting_requests sheds first (503 ``OL`` with
   ``x-envoy-overloaded``); then the path policy (``router/path.py``, only when one is
   configured): a path it cannot normalise → 400, ``UNESCAPE_AND_REDIRECT`` → 307 to the
   normalised path (400 for gRPC, which cannot follow redirects), otherwise the normalised
   target is what routes match and what the upstream receives (``target``). After the
   filters: no route → 404 ``NR``; a direct response or redirect is a local reply; an
   unknown cluster → 503 ``NC``.
   Every local reply after a route was chosen carries the route's response-header mutations,
   on both codecs.
4. Forwarding: a host pick (hash policy) or 503 ``UH``; then the max_requests breaker of the
   route's priority (DEFAULT or HIGH) and its fair share for the downstream peer
   (``upstream/breaker.py``), or 503 ``UO`` with ``x-envoy-overloaded``.
5. A retry happens only when the route has a retry policy whose ``retry_on`` covers the
   outcome (nothing is replayed without one: a request that may have reached the application
   is never sent twice on the proxy's own initiative), only before the response began, within
   ``num_retries``, while the body copy is whole (``retry_buffer_limit``), when the retry
   breaker of the route's priority admits it (held once per request, released at the end);
   the wait is jittered exponential back-off. A response after a retry counts
   ``upstream_rq_retry_success``.
6. Timeouts: ``request_timeout`` runs from the start of the stream until the request is
   complete (408, ``downstream_rq_timeout``; the HTTP/1.1 reply closes the connection since
   the body is unread); as in Envoy a response that began first (an upgrade's 101) disarms
   it, and with it a later ``max_stream_duration`` of that stream. The route timeout runs
   from the end of the request; ``max_stream_duration`` from the start of the stream.
   ``stream_deadline`` is the deadline to arm when the request is forwarded,
   ``route_deadline(now)`` the one that replaces it when the request is complete. For a gRPC
   request with ``grpc_timeout_header_max`` set, a valid ``grpc-timeout`` (capped by it, 0
   meaning no cap) replaces both, from the stream start, and the upstream request carries the
   effective value (Envoy's new-style timeouts); with no effective limit the header is
   removed. The per-try timeout runs per attempt once the request is complete.
   ``stream_idle_timeout`` reads the byte counters the relay keeps anyway, scaled by the
   overload manager's reduce_timeouts (``HTTP_DOWNSTREAM_STREAM_IDLE``).
7. Outlier detection hears each response's status (a gRPC status mapped to HTTP by Envoy's
   table) and each local-origin failure (connect failure, reset, timeout).
8. Stats, once, at the end: ``upstream_rq_<xx>`` when an attempt was started and a status is
   known (the upstream's, or the router's answer to an upstream failure: Envoy's
   ``chargeUpstreamCode``); ``upstream_rq_time`` from the first attempt's start to the last
   upstream response byte, only when the upstream response completed.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Protocol

from meshproxy.config.model import DirectResponse, Redirect, RouteAction
from meshproxy.hcm import grpc
from meshproxy.hcm.context import (
    NO_HEALTHY_UPSTREAM,
    NO_ROUTE,
    OVERFLOW_FAIR_SHARE,
    OVERFLOW_REQUESTS,
    OVERLOAD_SHED,
    PATH_REJECTED,
    REQUEST_TIMEOUT,
    STREAM_IDLE_REQUEST,
    STREAM_IDLE_RESPONSE,
    UPSTREAM_TIMEOUT,
    HttpContext,
    LocalReply,
    RoutePlan,
)
from meshproxy.hcm.filters import run_end, run_request
from meshproxy.hcm.record import access_record
from meshproxy.router.action import pick_cluster, redirect_location
from meshproxy.router.hashing import request_hash
from meshproxy.router.path import Outcome, normalize
from meshproxy.router.retry import grpc_status_of

if TYPE_CHECKING:
    from meshproxy.config.model import WeightedCluster
    from meshproxy.hcm.filters import FilterStream
    from meshproxy.router.retry import Failure, RetryRules
    from meshproxy.router.table import RouteDecision
    from meshproxy.tracing.tracer import Span
    from meshproxy.upstream.breaker import ResourceManager
    from meshproxy.upstream.cluster import ClusterRuntime, Host

GRPC_TIMEOUT = b"grpc-timeout"
_CONTENT_TYPE = b"content-type"


class RequestView(Protocol):
    """What the access record reads of a finished stream (both codecs' streams have it)."""

    method: bytes
    url: bytes
    authority: bytes | None
    headers: list[tuple[bytes, bytes]]
    request_id: bytes | None
    status: int
    flags: str
    rx_bytes: int
    tx_bytes: int


class Carrier(Protocol):
    """What an exchange tells the stream that holds it (each codec's stream is one)."""

    finished: bool
    response_started: bool
    request_complete: bool
    status: int
    rx_bytes: int
    tx_bytes: int

    @property
    def client_gone(self) -> bool: ...

    def local_reply(self, reply: LocalReply) -> None: ...

    def retry_after(self, delay: float) -> None: ...

    def resend(self) -> None: ...


class Exchange:
    __slots__ = (
        "admitted",
        "attempt",
        "attempt_start",
        "body_copy",
        "body_copy_size",
        "cluster",
        "ctx",
        "decision",
        "filter_state",
        "filters_at",
        "grpc",
        "hash",
        "host",
        "in_flight",
        "plan",
        "request_deadline",
        "resources",
        "retry",
        "retry_held",
        "route_end",
        "source",
        "span",
        "start",
        "stream_deadline",
        "stream_end",
        "sweep_mark",
        "sweep_time",
        "target",
        "upstream_end",
        "upstream_start",
        "wall_start",
        "weighted",
    )

    def __init__(self, ctx: HttpContext, now: float) -> None:
        self.ctx = ctx
        self.start = now
        self.wall_start = time.time() if ctx.access_log is not None else 0.0
        self.decision: RouteDecision | None = None
        self.plan: RoutePlan | None = None
        self.weighted: WeightedCluster | None = None
        self.cluster: ClusterRuntime | None = None
        self.host: Host | None = None
        self.resources: ResourceManager | None = None  # the breakers of the route's priority
        self.hash: int | None = None
        self.retry: RetryRules | None = None
        self.attempt = 1  # x-envoy-attempt-count
        self.attempt_start = now
        self.upstream_start = 0.0
        self.upstream_end = 0.0
        self.body_copy: list[bytes] | None = None  # None once it outgrew retry_buffer_limit
        self.body_copy_size = 0
        self.retry_held = False
        self.admitted = False
        self.in_flight = False  # counted in host.rq_active (least-request load)
        self.grpc = False
        self.target = b""  # rule 3: the request target routed and forwarded
        self.source = b""  # the downstream peer's IP: its fair share of the breaker (rule 4)
        self.filters_at = 0  # rule 2: the request hooks that ran (a waiting chain resumes there)
        self.filter_state: dict[str, Any] | None = None  # filters' per-request state, by name
        # Rule 6 (0: none): the stream limit (max_stream_duration or grpc-timeout), the
        # request_timeout, the earlier of both (armed when forwarded) and, from the request's
        # end, the earlier of the stream limit and the route timeout (-1: not yet computed).
        self.stream_end = 0.0
        self.request_deadline = 0.0
        self.stream_deadline = 0.0
        self.route_end = -1.0
        self.sweep_mark = -1
        self.sweep_time = 0.0
        self.span: Span | None = None  # the request's trace span, once forwarded (tracing on)
        ctx.stats.downstream_rq_total += 1
        ctx.stats.downstream_rq_active += 1

    # ------------------------------------------------------------------ admission and routing

    def match(self, authority: bytes, url: bytes, headers: list[tuple[bytes, bytes]]) -> LocalReply | None:
        """Rule 3, up to the route match: a reply when the request is shed or its path refused;
        otherwise ``self.target`` (``url`` after the path policy) and ``self.decision`` are set
        (a decision without a route: no route matched)."""
        ctx = self.ctx
        overload = ctx.overload
        if overload.shed_fraction and overload.shed_request(ctx.rng):
            ctx.stats.downstream_rq_overload_close += 1
            return OVERLOAD_SHED
        policy = ctx.config.path
        if policy.active:
            outcome, url = normalize(url, policy)
            if outcome is not Outcome.FORWARD:
                return self._path_refused(outcome, url, headers)
        self.target = url
        self.decision = ctx.routes.route(authority, url, headers)
        return None

    def request_filters(self, carrier: FilterStream, now: float) -> bool:
        """Rule 2: the HTTP filters' request hooks (``hcm/filters.py``), from where they stopped;
        True when the router may go on. A reply or a wait was handed to ``carrier`` otherwise."""
        return run_request(self.ctx.filters, carrier, self, now)  # type: ignore[arg-type]  # callers check

    def route(self, authority: bytes) -> LocalReply | ClusterRuntime:
        """Rule 3, the router's action on the matched route: its cluster (rule 1: looked up
        once, here), or a local reply. The caller forwards ``self.target``."""
        ctx = self.ctx
        stats = ctx.stats
        decision = self.decision
        if decision is None or decision.route is None:
            stats.no_route += 1
            return NO_ROUTE
        route = decision.route
        action = route.action
        if type(action) is RouteAction:
            plan = ctx.plans.get(decision)
            if plan is None:
                plan = ctx.plans[decision] = RoutePlan(decision)
            self.plan = plan
            name = plan.cluster
            if name is None:
                name, self.weighted = pick_cluster(action, ctx.rng.getrandbits(32))
            cluster = ctx.clusters.get(name)
            if cluster is None:
                stats.no_cluster += 1
                return LocalReply(503, b"no cluster " + name.encode(), "NC")
            return cluster
        if type(action) is DirectResponse:
            stats.rq_direct_response += 1
            return LocalReply(action.status, action.body, "-")
        assert type(action) is Redirect
        stats.rq_redirect += 1
        location = redirect_location(action, route.match, ctx.scheme, authority, self.target)
        return LocalReply(action.response_code, b"", "-", ((b"location", location),))

    def _path_refused(self, outcome: Outcome, url: bytes, headers: list[tuple[bytes, bytes]]) -> LocalReply:
        """Rule 3: a path the policy refuses, or redirects (gRPC clients get the refusal)."""
        stats = self.ctx.stats
        if outcome is Outcome.REDIRECT and not any(
            n == _CONTENT_TYPE and grpc.is_grpc(v) for n, v in headers
        ):
            stats.downstream_rq_redirected_with_normalized_path += 1
            return LocalReply(307, b"", "-", ((b"location", url),))
        stats.downstream_rq_failed_path_normalization += 1
        return PATH_REJECTED

    def forward(
        self,
        cluster: ClusterRuntime,
        authority: bytes,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        peer_ip: bytes,
        replayable: bool = True,
        original_dst: tuple[str, int] | None = None,
    ) -> LocalReply | None:
        """Rule 4: pick a host and pass the breaker; then this request has an upstream.
        ``original_dst``: the connection's restored destination (an ORIGINAL_DST cluster's host)."""
        plan = self.plan
        assert plan is not None
        if plan.hash_policy and cluster.hashing:
            self.hash = request_hash(plan.hash_policy, headers, authority, url, peer_ip)
        hosts = cluster.original_dst  # type ORIGINAL_DST: the host is where the client was going
        host = cluster.pick(self.hash) if hosts is None else hosts.host_for(original_dst, headers)
        if host is None:
            return NO_HEALTHY_UPSTREAM
        resources = cluster.breakers.high if plan.high_priority else cluster.breakers.default
        admitted = cluster.admit_request(resources, peer_ip)
        if not admitted:
            return OVERFLOW_REQUESTS if admitted is False else OVERFLOW_FAIR_SHARE
        self.source = peer_ip
        self.admitted = True
        self.resources = resources
        self.cluster = cluster
        self.host = host
        stats = cluster.stats
        stats.upstream_rq_total += 1
        stats.upstream_rq_active += 1
        if replayable and (plan.retry is not None or plan.mirrors):  # mirrors copy the body too
            self.retry = plan.retry
            self.body_copy = []
        if plan.grpc_timeout_max is not None or plan.max_stream_duration > 0:
            self._stream_limit(plan, headers)
        limit = self.ctx.config.request_timeout
        if limit > 0:
            self.request_deadline = self.start + limit
        self.stream_deadline = _earliest(self.stream_end, self.request_deadline)
        return None

    def _stream_limit(self, plan: RoutePlan, headers: list[tuple[bytes, bytes]]) -> None:
        """Rule 6: max_stream_duration, or grpc-timeout in its place; rewrites the header."""
        limit = plan.max_stream_duration
        at = -1
        if plan.grpc_timeout_max is not None:
            asked = None
            for i, (name, value) in enumerate(headers):
                if name == _CONTENT_TYPE:
                    self.grpc = grpc.is_grpc(value)
                elif name == GRPC_TIMEOUT:
                    at = i
                    asked = grpc.parse_timeout(value)
            if self.grpc and asked is not None:
                cap = plan.grpc_timeout_max
                limit = asked if cap <= 0 else min(asked, cap)
        if limit > 0:
            self.stream_end = self.start + limit
        if self.grpc and plan.grpc_timeout_max is not None:
            if limit > 0:
                value = grpc.format_timeout(limit)
                if at >= 0:
                    headers[at] = (GRPC_TIMEOUT, value)
                else:
                    headers.append((GRPC_TIMEOUT, value))
            elif at >= 0:
                del headers[at]

    def keepalive_closes(self) -> bool:
        """The overload manager's disable_http_keepalive for this response: True when it closes
        its connection (HTTP/1.1 ``connection: close``, HTTP/2 GOAWAY); counted."""
        ctx = self.ctx
        if ctx.overload.close_keepalive(ctx.rng):
            ctx.stats.downstream_cx_overload_disable_keepalive += 1
            return True
        return False

    # ------------------------------------------------------------------ attempts

    def attempt_started(self, now: float) -> None:
        """An attempt goes to ``self.host`` now."""
        host = self.host
        assert host is not None
        host.rq_total += 1
        host.rq_active += 1
        self.in_flight = True
        self.attempt_start = now
        if not self.upstream_start:
            self.upstream_start = now

    def keep_body(self, data: bytes) -> None:
        """Keep request bytes for a replay; past the bound the request is no longer retried."""
        size = self.body_copy_size = self.body_copy_size + len(data)
        if size > self.plan.retry_buffer_limit:  # type: ignore[union-attr]  # a copy implies a plan
            self.body_copy = None
        else:
            self.body_copy.append(data)  # type: ignore[union-attr]  # callers check it is kept

    def end_attempt(self) -> None:
        if self.in_flight:
            self.in_flight = False
            self.host.rq_active -= 1  # type: ignore[union-attr]  # in flight implies a host

    def failed(self, kind: Failure, retry_possible: bool) -> float | None:
        """Rule 7, then rule 5 for a local-origin failure: the back-off to wait, or None
        when the caller answers locally. ``retry_possible``: no response byte went
        downstream and the client is still there."""
        cluster, host = self.cluster, self.host
        if cluster is not None and host is not None:
            cluster.host_failed(host)
        rules = self.retry
        if rules is None or not retry_possible or not rules.failure_retriable(kind):
            return None
        return self._retry_delay(rules)

    def try_timed_out(self, retry_possible: bool) -> float | None:
        self.cluster.stats.upstream_rq_per_try_timeout += 1  # type: ignore[union-attr]  # attempts imply a cluster
        return self.failed("per-try-timeout", retry_possible)

    def response(
        self,
        carrier: Carrier,
        status: int,
        grpc_status: bytes | None,
        now: float,
        observe: bool = True,
    ) -> bool:
        """Response headers of an attempt: outlier feedback (rule 7; ``observe`` False when the
        outcome comes later, in gRPC trailers), then rule 5 for its status. True when the
        carrier was told to retry instead of relaying them."""
        cluster = self.cluster
        assert cluster is not None
        if observe and cluster.observing:
            self.observe(status, grpc_status, now)
        rules = self.retry
        if rules is not None:
            code = grpc_status_of(grpc_status) if grpc_status is not None and rules.grpc_statuses else None
            if not carrier.client_gone and rules.status_retriable(status, code):
                delay = self._retry_delay(rules)
                if delay is not None:
                    carrier.retry_after(delay)
                    return True
            if self.attempt > 1:
                cluster.stats.upstream_rq_retry_success += 1
        return False

    def observe(self, status: int, grpc_status: bytes | None, now: float) -> None:
        """Rule 7: a gRPC status counts as Envoy's router maps it to HTTP."""
        if grpc_status is not None:
            code = grpc_status_of(grpc_status)
            if code is not None:
                status = grpc.http_status_for(code)
        self.cluster.observe(self.host, status, now - self.attempt_start)  # type: ignore[union-attr]  # only called once forwarded

    def _retry_delay(self, rules: RetryRules) -> float | None:
        cluster = self.cluster
        assert cluster is not None
        if self.attempt > rules.policy.num_retries or self.body_copy is None:
            return None
        if not self.retry_held:
            if not cluster.admit_retry(self.resources):
                return None
            self.retry_held = True
        self.end_attempt()
        cluster.stats.upstream_rq_retry += 1
        return rules.backoff(self.attempt - 1, self.ctx.rng)

    def next_attempt(self) -> Host | None:
        """After the back-off: the host of the next attempt (None: answer ``UH``)."""
        rules, cluster = self.retry, self.cluster
        assert rules is not None and cluster is not None
        self.attempt += 1
        if cluster.original_dst is not None:
            return self.host  # an ORIGINAL_DST cluster has one host per request
        host = cluster.pick(self.hash, self.host if rules.policy.retry_other_hosts else None)
        if host is not None:
            self.host = host
        return host

    def moved_to(self, host: Host) -> None:
        """The cluster handed this waiting request a connection to another host."""
        old = self.host
        if old is not host:
            if self.in_flight and old is not None:
                old.rq_active -= 1
                host.rq_active += 1
            self.host = host

    # ------------------------------------------------------------------ decisions carried out

    def upstream_failed(self, carrier: Carrier, kind: Failure, reply: LocalReply) -> None:
        """An attempt failed before the response began: the carrier retries it or replies."""
        delay = self.failed(kind, not carrier.response_started and not carrier.client_gone)
        if delay is None:
            carrier.local_reply(reply)
        else:
            carrier.retry_after(delay)

    def retry_due(self, carrier: Carrier) -> None:
        """The back-off passed: the next attempt goes out, or ``UH`` when no host is left."""
        if carrier.finished:
            return
        if self.next_attempt() is None:
            carrier.local_reply(NO_HEALTHY_UPSTREAM)
        else:
            carrier.resend()

    def try_timer_fired(self, carrier: Carrier) -> None:
        if carrier.finished or carrier.response_started:
            return
        delay = self.try_timed_out(not carrier.client_gone)
        if delay is None:
            carrier.local_reply(UPSTREAM_TIMEOUT)
        else:
            carrier.retry_after(delay)

    def deadline_fired(self, carrier: Carrier) -> None:
        """The deadline last armed (``stream_deadline``, then ``route_deadline``) passed."""
        if carrier.finished:
            return
        if (
            carrier.request_complete
            or not self.request_deadline
            or (self.stream_end and self.stream_end < self.request_deadline)
        ):
            carrier.local_reply(self.timed_out())
        elif not carrier.response_started:  # a response (an upgrade's 101) disarms it, as in Envoy
            self.ctx.stats.downstream_rq_timeout += 1
            carrier.local_reply(REQUEST_TIMEOUT)

    def sweep(self, carrier: Carrier, now: float, limit: float) -> None:
        """Rule 6, stream_idle_timeout: progress is read from the carrier's byte counters."""
        if carrier.finished:
            return
        progress = carrier.rx_bytes + carrier.tx_bytes + carrier.status
        overload = self.ctx.overload
        if overload.timer_scale:
            limit = overload.scale_timeout("HTTP_DOWNSTREAM_STREAM_IDLE", limit)
        reply = self.idle(now, limit, progress, carrier.request_complete)
        if reply is not None:
            carrier.local_reply(reply)

    # ------------------------------------------------------------------ timeouts

    def route_deadline(self, now: float) -> float:
        """Rule 6, once the request is complete: when it times out from now on (0: never). It
        replaces ``stream_deadline`` (request_timeout no longer applies); computed at the first
        call, so later attempts do not move it."""
        if self.route_end >= 0:
            return self.route_end
        plan = self.plan
        if plan is None:
            return 0.0
        deadline = self.stream_end
        if plan.timeout > 0 and not (self.grpc and plan.grpc_timeout_max is not None and deadline):
            deadline = _earliest(deadline, now + plan.timeout)
        self.route_end = deadline
        return deadline

    def timed_out(self) -> LocalReply:
        if self.cluster is not None:
            self.cluster.stats.upstream_rq_timeout += 1
        self.ctx.stats.downstream_rq_timeout += 1
        return UPSTREAM_TIMEOUT

    def idle(self, now: float, limit: float, progress: int, request_complete: bool) -> LocalReply | None:
        """Rule 6, stream_idle_timeout: ``progress`` is any number that moves with each byte."""
        if progress != self.sweep_mark:
            self.sweep_mark = progress
            self.sweep_time = now
            return None
        if now - self.sweep_time <= limit:
            return None
        self.ctx.stats.downstream_rq_idle_timeout += 1
        return STREAM_IDLE_RESPONSE if request_complete else STREAM_IDLE_REQUEST

    # ------------------------------------------------------------------ the end

    def upstream_done(self, now: float) -> None:
        """The last byte of the upstream response arrived."""
        self.upstream_end = now

    def finish(self, now: float, stream: RequestView, protocol: str, peer: Any) -> None:
        """Rule 8: the request is over (``peer``: the downstream connection, for the log)."""
        self.end_attempt()
        ctx = self.ctx
        stats = ctx.stats
        status = stream.status
        xx = status // 100 if 100 <= status < 600 else 0
        elapsed_ms = (now - self.start) * 1000.0
        stats.downstream_rq_active -= 1
        stats.downstream_rq_completed += 1
        stats.downstream_rq_xx[xx] += 1
        h = stats.downstream_rq_time  # Histogram.observe, inlined: this runs per request
        h.counts[bisect_left(h.bounds, elapsed_ms)] += 1
        h.sum += elapsed_ms
        cluster = self.cluster
        if cluster is not None:
            if self.admitted:
                cluster.request_done(self.resources, self.retry_held, self.source)
            cs = cluster.stats
            cs.upstream_rq_active -= 1
            if self.upstream_start and status:
                cs.upstream_rq_xx[xx] += 1
            if self.upstream_end:
                upstream_ms = (self.upstream_end - self.upstream_start) * 1000.0
                h = cs.upstream_rq_time
                h.counts[bisect_left(h.bounds, upstream_ms)] += 1
                h.sum += upstream_ms
        if ctx.filters is not None:
            run_end(ctx.filters, stream, self, now)
        if ctx.access_log is not None:
            ctx.access_log.log(access_record(self, stream, protocol, peer, elapsed_ms))
        if ctx.tracer is not None:
            ctx.tracer.end(self, stream, protocol, peer, now)
        if ctx.istio is not None:
            ctx.istio.request(self, stream, peer, now)


def _earliest(a: float, b: float) -> float:
    """The earlier of two deadlines where 0 means none."""
    return a if not b or (a and a < b) else b
