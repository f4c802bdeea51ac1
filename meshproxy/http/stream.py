"""One HTTP/1.1 request/response exchange through the proxy (Envoy's "stream").

Owns the life of a request from its parsed head to its access-log line: routing, body relay
in both directions with flow control, response framing, local replies with response flags, and
the WebSocket/Upgrade tunnel.
The downstream connection feeds it parsed request events; the upstream connection feeds it
parsed response events. It is driven only by callbacks: no coroutine per request, and one
transport write per response head (head and first body bytes are coalesced per read).

Lifecycle rules (the reason for each flag):
1. A response is written to the downstream at most once: ``response_started`` guards it;
   after it, a failure can only abort the connection (the client sees a truncated response).
2. An upstream connection returns to the pool only when both the request and the response
   completed cleanly; anything else closes it (it may hold half a message).
3. The downstream connection is kept alive only when the request completed, the response
   completed, neither side asked to close, and the listener is not draining.

It is one module of about 600 lines on purpose: the rules above bind every method, and the
request side, the response side and the endings each read and write the same flags. What does
not touch them lives beside it: upstream policy (attempts, retries, timeouts, rate limit) in
``attempts.py``, its base class; the upstream request head in ``head.py``; ``plan.py``,
``logline.py``, ``codec.py``.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from time import monotonic
from typing import TYPE_CHECKING

from meshproxy.config.model import DirectResponse, Redirect, RouteAction
from meshproxy.http import codec
from meshproxy.http.attempts import Attempts
from meshproxy.http.head import absolute_form, request_head
from meshproxy.http.logline import access_record
from meshproxy.http.plan import RoutePlan
from meshproxy.router.action import pick_cluster, redirect_location
from meshproxy.router.hashing import request_hash
from meshproxy.router.headers import apply_mutations
from meshproxy.router.retry import grpc_status_of

if TYPE_CHECKING:
    from asyncio import Task, TimerHandle

    from meshproxy.config.model import WeightedCluster
    from meshproxy.http.downstream import DownstreamConnection, HttpContext
    from meshproxy.http.upstream import UpstreamConnection
    from meshproxy.router.retry import RetryRules
    from meshproxy.router.table import RouteDecision
    from meshproxy.upstream.cluster import ClusterRuntime, Host

# Reasons the downstream connection's reading is paused (a bit each; reading resumes at 0).
PAUSE_UPSTREAM_FULL = 1
PAUSE_PENDING_FULL = 2
PAUSE_PIPELINE = 4

# Envoy marks local replies caused by a circuit breaker.
OVERLOADED = (b"x-envoy-overloaded", b"true")

# Stream's slots, one per field set in __init__ (as words, to keep the class header short).
_FIELDS = (
    "attempt attempt_start authority body_copy body_copy_size body_sent chunked cluster conn "
    "connect_task ctx decision expect finished flags has_body hash headers headers_done host "
    "in_flight http10 keep_alive method out pending pending_size plan request_complete request_head "
    "request_id resp_chunk_down resp_close_delimited resp_content_length resp_lines response_complete "
    "response_started retried retry retry_held retry_timer rx_bytes start started status sweep_mark "
    "sweep_time timer deadline try_timer tunnel tx_bytes upgrade upstream url waiting wall_start "
    "weighted xff xfp"
)


class Stream(Attempts):
    __slots__ = tuple(_FIELDS.split())

    def __init__(self, conn: DownstreamConnection, now: float) -> None:
        # ``now`` is time.monotonic(): uvloop's loop.time() only has millisecond resolution.
        self.conn = conn
        self.ctx: HttpContext = conn.ctx
        self.start = now
        self.headers: list[tuple[bytes, bytes]] = []
        self.out: list[bytes] = []
        self.resp_lines: list[bytes] = []  # response header lines, CRLF-terminated
        self.wall_start = 0.0
        self.url = b""
        self.method = b""
        self.authority: bytes | None = None
        self.xff: bytes | None = None
        self.xfp: bytes | None = None
        self.request_id: bytes | None = None
        self.upgrade: bytes | None = None
        self.keep_alive = True
        self.expect = self.chunked = self.http10 = self.headers_done = self.has_body = False
        self.started = self.request_complete = self.response_started = self.response_complete = False
        self.finished = self.tunnel = self.retried = self.body_sent = False
        self.decision: RouteDecision | None = None
        self.cluster: ClusterRuntime | None = None
        self.host: Host | None = None
        self.upstream: UpstreamConnection | None = None
        self.connect_task: Task[UpstreamConnection] | None = None
        self.request_head = b""
        self.pending: list[bytes] | None = None
        self.pending_size = 0
        self.resp_content_length = self.resp_chunk_down = self.resp_close_delimited = False
        self.status = 0
        self.flags = "-"
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.timer: TimerHandle | None = None
        self.deadline = 0.0  # monotonic time of a coarse route timeout; 0: none armed
        self.weighted: WeightedCluster | None = None
        self.sweep_mark = -1
        self.sweep_time = 0.0
        self.plan: RoutePlan | None = None
        # Upstream policy: the attempt number (x-envoy-attempt-count), the retry rules and the
        # request body kept for a replay (None once it outgrew retry_buffer_limit).
        self.attempt = 1
        self.attempt_start = now
        self.retry: RetryRules | None = None
        self.retry_held = False
        self.retry_timer: TimerHandle | None = None
        self.try_timer: TimerHandle | None = None
        self.body_copy: list[bytes] | None = None
        self.body_copy_size = 0
        self.hash: int | None = None
        self.in_flight = False  # counted in host.rq_active (least-request load)
        self.waiting = False  # queued in the cluster for a connection (pending request)

    # ================================================================== request side

    def begin(self) -> None:
        """The request head is complete and this stream is the connection's active one."""
        self.started = True
        ctx = self.ctx
        stats = ctx.stats
        stats.downstream_rq_total += 1
        stats.downstream_rq_active += 1
        if ctx.access_log is not None:
            self.wall_start = time.time()
        conn = self.conn
        if not self.keep_alive or conn.listener.draining:
            self.keep_alive = False
        if self.method == b"CONNECT":
            # llhttp now treats the connection as a tunnel: nothing more can be parsed on it.
            self.keep_alive = False
            return self.local_reply(405, b"CONNECT is not supported", "-")
        if self.url[0] != 0x2F and self.url != b"*":
            absolute = absolute_form(self.url)
            if absolute is None:
                stats.downstream_cx_protocol_error += 1
                self.keep_alive = False
                return self.local_reply(400, b"invalid request target", "DPE")
            self.authority, self.url = absolute
        authority = self.authority
        if authority is None:
            if not self.http10:
                stats.downstream_cx_protocol_error += 1
                self.keep_alive = False
                return self.local_reply(400, b"missing host header", "DPE")
            authority = b""
        if ctx.ratelimit is not None and self._rate_limited():
            return None
        decision = ctx.routes.route(authority, self.url, self.headers)
        if decision is None or decision.route is None:
            stats.no_route += 1
            return self.local_reply(404, b"", "NR")
        self.decision = decision
        route = decision.route
        action = route.action
        if type(action) is RouteAction:
            plan = ctx.plans.get(decision)
            if plan is None:
                plan = ctx.plans[decision] = RoutePlan(decision)
            self.plan = plan
            cluster_name = plan.cluster
            if cluster_name is None:
                cluster_name, self.weighted = pick_cluster(action, ctx.rng.getrandbits(32))
        elif type(action) is DirectResponse:
            stats.rq_direct_response += 1
            return self.local_reply(action.status, action.body, "-", mutate=True)
        else:
            assert type(action) is Redirect
            stats.rq_redirect += 1
            location = redirect_location(action, route.match, ctx.scheme, authority, self.url)
            return self.local_reply(
                action.response_code, b"", "-", extra=[(b"location", location)], mutate=True
            )
        cluster = ctx.clusters.get(cluster_name)
        if cluster is None:
            stats.no_cluster += 1
            return self.local_reply(503, b"no cluster " + cluster_name.encode(), "NC")
        if cluster.config.http2 is not None and not cluster.config.use_downstream_protocol:
            from meshproxy.http2.from_http1 import relay_over_http2  # a cycle at import time

            return relay_over_http2(self, cluster, plan, decision, authority)
        if plan.hash_policy and cluster.hashing:
            self.hash = request_hash(plan.hash_policy, self.headers, authority, self.url, self.conn.peer_ip)
        host = cluster.pick(self.hash)
        if host is None:
            return self.local_reply(503, b"no healthy upstream", "UH")
        if not cluster.admit_request():
            return self.local_reply(503, b"upstream overflow: max_requests", "UO", extra=[OVERLOADED])
        self.cluster = cluster
        self.host = host
        self.request_head = request_head(self, plan, decision, authority)
        cluster.stats.upstream_rq_total += 1
        cluster.stats.upstream_rq_active += 1
        if plan.retry is not None and self.upgrade is None:
            self.retry = plan.retry
            self.body_copy = []
        if self.expect and not self.request_complete and not self.http10:  # RFC 9110 §10.1.1
            self._write_down(codec.CONTINUE_100)
        self._send()
        return None

    def request_body(self, data: bytes) -> None:
        self.rx_bytes += len(data)
        if self.upgrade is not None and not self.tunnel:
            return  # no body on an upgrade request; tunnel bytes arrive through tunnel_data
        copy = self.body_copy
        if copy is not None:
            self.body_copy_size += len(data)
            if self.body_copy_size > self.plan.retry_buffer_limit:  # type: ignore[union-attr]
                self.body_copy = None  # too large to replay: this request is not retried
            else:
                copy.append(data)
        up = self.upstream
        if up is not None and self.started:
            self.body_sent = True
            up.transport.write(codec.chunk(data) if self.chunked else data)
        elif not self.finished:
            self._hold(data)

    def request_end(self) -> None:
        self.request_complete = True
        up = self.upstream
        if self.chunked:
            if up is not None and self.started:
                up.transport.write(codec.LAST_CHUNK)
            elif not self.finished:
                self.request_body_marker_end()
        if self.response_complete:
            self._maybe_finish()
        elif self.started and not self.finished:
            self._arm_timer()

    def request_body_marker_end(self) -> None:
        if self.pending is None:
            self.pending = []
        self.pending.append(codec.LAST_CHUNK if self.chunked else b"")

    def tunnel_data(self, data: bytes) -> None:
        """Bytes after an Upgrade request's head: relayed once the upstream switched protocols."""
        self.rx_bytes += len(data)
        up = self.upstream
        if self.tunnel and up is not None:
            up.transport.write(data)
        else:
            self._hold(data)

    def _hold(self, data: bytes) -> None:
        """Keep request bytes until the upstream is ready; past the buffer limit, stop reading."""
        if self.pending is None:
            self.pending = []
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > self.conn.buffer_limit:
            self.conn.pause(PAUSE_PENDING_FULL)

    # ================================================================== upstream connection

    def connect(self) -> None:
        from meshproxy.http.upstream import UpstreamConnection

        cluster, host = self.cluster, self.host
        assert cluster is not None and host is not None
        if not cluster.can_connect():
            # max_connections reached: wait as a pending request for a connection to free up.
            if cluster.enqueue(self):
                self.waiting = True
                return
            return self.local_reply(503, b"upstream overflow: max_pending_requests", "UO", extra=[OVERLOADED])
        task = cluster.open_connection(host, lambda: UpstreamConnection(cluster, host))
        self.connect_task = task
        task.add_done_callback(self._connected)

    def _connected(self, task: Task[UpstreamConnection]) -> None:
        self.connect_task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if not self.finished:
                reason = "timeout" if isinstance(exc, TimeoutError) else (str(exc) or type(exc).__name__)
                self._failed("connect-failure", 503, b"upstream connect error: " + reason.encode(), "UF")
            return
        upstream = task.result()
        if self.finished:
            # The request went away while connecting: the fresh connection is still useful.
            assert self.cluster is not None
            self.cluster.release(upstream, self.conn.loop.time())
            return
        self.attach(upstream)

    def attach(self, upstream: UpstreamConnection) -> None:
        self.upstream = upstream
        upstream.bind(self)
        head = self.request_head
        if self.retry is not None:
            head = b"%bx-envoy-attempt-count: %d\r\n\r\n" % (head[:-2], self.attempt)
        pending = self.pending
        if pending:
            self.body_sent = True
            if self.tunnel or self.upgrade is not None:
                upstream.transport.write(head)
                upstream.held = pending  # tunnel bytes wait for the 101
            elif self.chunked:
                parts = [head]
                for piece in pending:
                    parts.append(piece if piece is codec.LAST_CHUNK else codec.chunk(piece))
                upstream.transport.write(b"".join(parts))
            else:
                upstream.transport.write(head + b"".join(pending))
            self.pending = None
            self.pending_size = 0
            self.conn.resume(PAUSE_PENDING_FULL)
        else:
            upstream.transport.write(head)
        if self.request_complete:
            self._arm_timer()

    def upstream_lost(self, reused: bool, exc: Exception | None) -> None:
        """The upstream connection closed while bound to this stream."""
        self.upstream = None
        if self.finished:
            return
        if self.tunnel:
            self.flags = "-"
            self.conn.transport.close()
            return self._finish()
        if not self.response_started:
            if reused and not self.retried and not self.body_sent:
                # A pooled connection the upstream closed just as we reused it: the request
                # never reached the application, so it is safe to send it on a new one.
                self.retried = True
                assert self.cluster is not None
                self.cluster.stats.upstream_rq_retry_reused += 1
                return self.connect()
            return self._failed(
                "reset", 503, b"upstream connect error or disconnect/reset before headers", "UC"
            )
        if self.resp_close_delimited:
            return self.response_end()
        self.flags = "UC"
        self.conn.abort()
        self._finish()

    def upstream_protocol_error(self, reason: str) -> None:
        if self.finished:
            return
        if self.response_started:
            self.flags = "UPE"
            self.conn.abort()
            return self._finish()
        self.local_reply(502, b"upstream protocol error: " + reason.encode(), "UPE")

    # ================================================================== response side

    def response_headers(self, status: int, upstream_keep_alive: bool) -> None:
        cluster = self.cluster
        if cluster.observing:  # type: ignore[union-attr]
            cluster.observe(self.host, status, monotonic() - self.attempt_start)  # type: ignore[union-attr]
        rules = self.retry
        if rules is not None:
            grpc = None
            if rules.grpc_statuses:
                for name, value in codec.header_lines(b"".join(self.resp_lines)):
                    if name == b"grpc-status":
                        grpc = grpc_status_of(value)
            if rules.status_retriable(status, grpc) and self._schedule_retry():
                return
            if self.try_timer is not None:
                self.try_timer.cancel()
                self.try_timer = None
        self.status = status
        self.response_started = True
        lines = self.resp_lines
        weighted = self.weighted
        if weighted is None:
            levels = self.plan.response_levels  # type: ignore[union-attr]
        else:
            levels = self.decision.response_mutations_for(weighted)  # type: ignore[union-attr]
        if levels:
            headers = codec.header_lines(b"".join(lines))
            apply_mutations(headers, *levels)
            lines = [codec.join_lines(headers)]
        no_body = status in codec.NO_BODY_STATUS or self.method == b"HEAD" or status < 200
        framed = self.resp_content_length or no_body
        if not upstream_keep_alive and not framed and not self.resp_chunk_down:
            self.resp_close_delimited = True
        parts = [codec.STATUS_LINES.get(status) or codec.status_line(status), *lines]
        if status == 101:
            parts += (b"connection: upgrade\r\nupgrade: ", self.upgrade or b"", b"\r\n")
        else:
            if not framed:
                if self.http10:
                    self.keep_alive = False
                    self.resp_chunk_down = False
                else:
                    self.resp_chunk_down = True
                    parts.append(b"transfer-encoding: chunked\r\n")
            if self._body_unread() or self.conn.listener.draining or self.upgrade is not None:
                self.keep_alive = False
            if not self.keep_alive:
                parts.append(b"connection: close\r\n")
            elif self.http10:
                parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        self.out.append(b"".join(parts))

    def response_body(self, data: bytes) -> None:
        self.tx_bytes += len(data)
        self.out.append(codec.chunk(data) if self.resp_chunk_down else data)

    def response_end(self) -> None:
        self.response_complete = True
        if self.resp_chunk_down:
            self.out.append(codec.LAST_CHUNK)
        self.flush()
        self._maybe_finish()

    def start_tunnel(self, early: bytes) -> None:
        """The upstream answered 101: from now on both connections relay raw bytes."""
        self.tunnel = True
        self.keep_alive = False
        if self.timer is not None:  # the route timeout covers the handshake, not the tunnel
            self.timer.cancel()
            self.timer = None
        if self.deadline:
            self.conn.listener.deadlines.discard(self)
            self.deadline = 0.0
        self.flush()
        if early:
            self._write_down(early)
        up = self.upstream
        if up is not None and up.held:
            up.transport.write(b"".join(up.held))
            up.held = None
        if self.pending:
            if up is not None:
                up.transport.write(b"".join(self.pending))
            self.pending = None
            self.pending_size = 0
            self.conn.resume(PAUSE_PENDING_FULL)

    def flush(self) -> None:
        out = self.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self._write_down(data)

    def _write_down(self, data: bytes) -> None:
        transport = self.conn.transport
        if transport is not None and not self.conn.closed:
            transport.write(data)

    # ================================================================== endings

    def local_reply(
        self,
        status: int,
        body: bytes,
        flags: str,
        *,
        extra: list[tuple[bytes, bytes]] | None = None,
        mutate: bool = False,
    ) -> None:
        """A response generated by the proxy; aborts the connection if a response already began."""
        if self.finished:
            return
        self.flags = flags
        self._drop_upstream()
        if self.response_started:
            self.conn.abort()
            return self._finish()
        if self._body_unread() or self.conn.listener.draining:
            self.keep_alive = False
        if mutate and self.decision is not None:
            levels = self.decision.response_mutations_for(None)
            if levels:
                extra = list(extra or [])
                apply_mutations(extra, *levels)
        self.status = status
        self.response_started = True
        self.response_complete = True
        data = codec.local_reply(
            status, body, close=not self.keep_alive, extra=extra, head_only=self.method == b"HEAD"
        )
        self.tx_bytes += len(body)
        self.out.clear()
        self._write_down(data)
        self._finish()

    def _body_unread(self) -> bool:
        """Is part of the request body still to come? Then the connection cannot be reused."""
        return self.has_body and not self.request_complete

    def downstream_lost(self) -> None:
        if self.finished:
            return
        if not self.response_complete:
            self.flags = "DC"
            self.ctx.stats.downstream_rq_rx_reset += 1
        self._drop_upstream()
        self._finish()

    def _drop_upstream(self) -> None:
        """Close the upstream side of an exchange that did not complete cleanly."""
        task = self.connect_task
        if task is not None:
            self.connect_task = None
            task.remove_done_callback(self._connected)
            task.add_done_callback(_release_orphan)
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.unbind()
            up.close()

    def _maybe_finish(self) -> None:
        if self.request_complete and self.response_complete and not self.finished:
            up = self.upstream
            if up is not None:
                self.upstream = None
                up.unbind()
                if up.reusable_after_response and self.cluster is not None:
                    self.cluster.release(up, self.conn.loop.time())
                else:
                    up.close()
            self._finish()
        elif self.response_complete and not self.finished and not self.keep_alive:
            # The response is done but the request body is still arriving: the connection
            # closes (rule 3), so there is nothing left to wait for.
            self._drop_upstream()
            self._finish()

    def _finish(self) -> None:
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.in_flight or self.try_timer is not None or self.waiting:
            self._end_attempt()
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
        if self.deadline:
            self.conn.listener.deadlines.discard(self)
        ctx = self.ctx
        stats = ctx.stats
        elapsed_ms = (monotonic() - self.start) * 1000.0
        if self.started:
            stats.downstream_rq_active -= 1
            stats.downstream_rq_completed += 1
            stats.downstream_rq_xx[self.status // 100 if 100 <= self.status < 600 else 0] += 1
            h = stats.downstream_rq_time  # Histogram.observe, inlined: this runs per request
            h.counts[bisect_left(h.bounds, elapsed_ms)] += 1
            h.sum += elapsed_ms
        cluster = self.cluster
        if cluster is not None:
            cluster.request_done(self.retry_held)
            cs = cluster.stats
            cs.upstream_rq_active -= 1
            if self.flags == "-" or self.flags == "DC":
                cs.upstream_rq_xx[self.status // 100 if 100 <= self.status < 600 else 0] += 1
                h = cs.upstream_rq_time
                h.counts[bisect_left(h.bounds, elapsed_ms)] += 1
                h.sum += elapsed_ms
        if ctx.access_log is not None:
            self._log(elapsed_ms)
        self.conn.stream_finished(self)

    def _log(self, elapsed_ms: float) -> None:
        self.ctx.access_log.log(access_record(self, elapsed_ms))  # type: ignore[union-attr]


def _release_orphan(task: Task[UpstreamConnection]) -> None:
    """A connect finished after its request was gone: close what it opened."""
    if not task.cancelled() and task.exception() is None:
        task.result().close()
