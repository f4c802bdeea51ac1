"""One HTTP/2 request stream relayed through the proxy (Envoy's "stream" over HTTP/2).

Owns one downstream stream from its HEADERS to its access-log line: routing (the same
``RouteTable`` as HTTP/1.1), the upstream request headers, DATA relayed both ways through
``Half`` queues (flow control: ``connection.py``), trailers both ways (gRPC status lives in
response trailers), RST_STREAM mapped both ways, local replies (gRPC ones as trailers-only
responses with grpc-status/grpc-message). Attempts, retries and timeouts: ``attempts.py``.

The downstream (``conn``) is an ``H2Downstream``, or ``from_http1.Http1Downstream`` for an
HTTP/1.1 request routed to an HTTP/2 cluster; the upstream (``up``, attached by ``pool``) is
an ``H2Upstream``, or ``to_http1.Http1Upstream`` for an HTTP/1.1 cluster. Both adapters
present the interface of the HTTP/2 side they replace, so this relay has one code path.

Rules: (1) response HEADERS go downstream at most once (``response_started``); after that a
failure can only reset the stream. (2) The stream finishes when both directions have ended,
or on a reset either way; finishing resets whichever side is still open. (3) Upstream stream
slots are returned to the pool on finish, never before.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from time import monotonic
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

from meshproxy.config.model import DirectResponse, Redirect, RouteAction
from meshproxy.http.logline import access_record
from meshproxy.http.plan import RoutePlan
from meshproxy.http2 import grpc
from meshproxy.http2.attempts import Attempts
from meshproxy.http2.connection import Half
from meshproxy.http2.fields import REQUEST_DROP, RESPONSE_DROP, SENSITIVE, never_indexed
from meshproxy.router.action import pick_cluster, redirect_location, rewrite_target
from meshproxy.router.headers import apply_mutations

if TYPE_CHECKING:
    from asyncio import TimerHandle

    from meshproxy.config.model import WeightedCluster
    from meshproxy.http2.downstream import H2Downstream
    from meshproxy.http2.upstream import H2Upstream
    from meshproxy.router.table import RouteDecision
    from meshproxy.upstream.cluster import ClusterRuntime, Host


class H2Stream(Attempts):
    __slots__ = (
        "authority",
        "cluster",
        "conn",
        "ctx",
        "decision",
        "down",
        "finished",
        "flags",
        "grpc",
        "headers",
        "host",
        "http10",
        "method",
        "plan",
        "pool",
        "request_complete",
        "request_id",
        "response_complete",
        "response_started",
        "rx_bytes",
        "scheme",
        "sid",
        "start",
        "status",
        "timer",
        "tx_bytes",
        "up",
        "up_half",
        "up_sid",
        "url",
        "wall_start",
        "weighted",
        "xff",
        "xfp",
        "grpc_timeout",
        "up_headers",
    )

    def __init__(self, conn: H2Downstream, sid: int, headers: list[tuple[bytes, bytes]], now: float) -> None:
        self.conn = conn
        self.ctx = conn.ctx
        self.sid = sid
        self.start = now
        self.wall_start = 0.0
        self.method = b""
        self.url = b""
        self.authority: bytes | None = None
        self.scheme = b""
        self.xff: bytes | None = None
        self.xfp: bytes | None = None
        self.request_id: bytes | None = None
        self.grpc = False
        self.grpc_timeout: float | None = None
        self.http10 = False
        kept: list[tuple[bytes, bytes]] = []
        for header in headers:
            name, value = header
            if name[0] == 0x3A:  # pseudo-header
                if name == b":method":
                    self.method = value
                elif name == b":path":
                    self.url = value
                elif name == b":authority":
                    self.authority = value.lower()
                elif name == b":scheme":
                    self.scheme = value
            elif name in REQUEST_DROP:
                if name == b"host" and self.authority is None:
                    self.authority = value.lower()
                elif name == b"x-forwarded-for":
                    self.xff = value
                elif name == b"x-forwarded-proto":
                    self.xfp = value
                elif name == b"x-request-id":
                    self.request_id = value
            else:
                if name == b"content-type":
                    self.grpc = grpc.is_grpc(value)
                elif name == b"grpc-timeout":
                    self.grpc_timeout = grpc.parse_timeout(value)
                elif name in SENSITIVE:
                    header = never_indexed(name, value)
                kept.append(header)
        if conn.xfcc is not None:
            kept.append((b"x-forwarded-client-cert", conn.xfcc))
        self.headers = kept
        self.up_headers: list[tuple[bytes, bytes]] = []
        self.decision: RouteDecision | None = None
        self.plan: RoutePlan | None = None
        self.weighted: WeightedCluster | None = None
        self.cluster: ClusterRuntime | None = None
        self.host: Host | None = None
        self.pool = None
        self.up: H2Upstream | None = None
        self.up_sid = 0
        self.up_half = Half(self._request_sent)
        self.up_half.ack = self._ack_down
        self.down = Half(self._response_sent)
        self.request_complete = False
        self.response_started = False
        self.response_complete = False
        self.finished = False
        self.status = 0
        self.flags = "-"
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.timer: TimerHandle | None = None
        self._init_attempts(now)

    # ================================================================== request side

    def begin(self) -> None:
        ctx = self.ctx
        stats = ctx.stats
        stats.downstream_rq_total += 1
        stats.downstream_rq_active += 1
        if ctx.access_log is not None:
            self.wall_start = time.time()
        if self.method == b"CONNECT":
            return self.local_reply(405, b"CONNECT is not supported", "-")
        authority = self.authority or b""
        decision = ctx.routes.route(authority, self.url, self.headers)
        if decision is None or decision.route is None:
            stats.no_route += 1
            return self.local_reply(404, b"", "NR")
        self.decision = decision
        route = decision.route
        action = route.action
        if type(action) is DirectResponse:
            stats.rq_direct_response += 1
            return self.local_reply(action.status, action.body, "-")
        if type(action) is Redirect:
            stats.rq_redirect += 1
            location = redirect_location(action, route.match, ctx.scheme, authority, self.url)
            return self.local_reply(action.response_code, b"", "-", extra=[(b"location", location)])
        assert type(action) is RouteAction
        plan = ctx.plans.get(decision)
        if plan is None:
            plan = ctx.plans[decision] = RoutePlan(decision)
        self.plan = plan
        cluster_name = plan.cluster
        if cluster_name is None:
            cluster_name, self.weighted = pick_cluster(action, ctx.rng.getrandbits(32))
        cluster = ctx.clusters.get(cluster_name)
        if cluster is None:
            stats.no_cluster += 1
            return self.local_reply(503, b"no cluster " + cluster_name.encode(), "NC")
        return self.forward(cluster, plan, decision, authority)

    def _upstream_headers(
        self, plan: RoutePlan, decision: RouteDecision, authority: bytes
    ) -> list[tuple[bytes, bytes]]:
        ctx = self.ctx
        headers = self.headers
        levels = (
            plan.request_levels if self.weighted is None else decision.request_mutations_for(self.weighted)
        )
        if levels:
            apply_mutations(headers, *levels)
        target = rewrite_target(decision.route, self.url) if plan.rewrites else self.url  # type: ignore[arg-type]
        tls = self.cluster is not None and self.cluster.tls is not None
        out = [
            (b":method", self.method),
            (b":scheme", b"https" if tls else b"http"),
            (b":authority", plan.host or authority),
            (b":path", target),
        ]
        out += headers
        peer = self.conn.peer_ip
        out.append((b"x-forwarded-for", self.xff + b", " + peer if self.xff else peer))
        xfp = ctx.scheme if ctx.config.use_remote_address or self.xfp is None else self.xfp
        out.append((b"x-forwarded-proto", xfp))
        rid = self.request_id
        if rid is None and ctx.config.generate_request_id:
            rid = self.request_id = ctx.request_ids.next()
        if rid is not None:
            out.append((b"x-request-id", rid))
        return out

    def attach(self, up: H2Upstream) -> None:
        """The pool found a stream slot on ``up``: send the request headers and what is held."""
        if self.finished or self.up is not None:
            return
        self.up = up
        half = self.up_half
        end = half.end and not half.chunks and half.trailers is None
        self.up_sid = up.open_stream(self, self.up_headers, end)
        if end:
            half.done = True
            self._request_sent()
        elif half.chunks or half.end:
            up.pump(self.up_sid, half)

    def request_data(self, data: bytes, flow: int) -> None:
        self.rx_bytes += len(data)
        half = self.up_half
        if half.done:
            self.conn.ack(self.sid, flow)
            return
        if self.body_copy is not None:
            self._keep_body(data)
        half.chunks.append((data, flow))
        if self.up is not None:
            self.up.pump(self.up_sid, half)

    def request_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.up_half.trailers = headers
        self.request_end()

    def request_end(self) -> None:
        self.request_complete = True
        half = self.up_half
        half.end = True
        if self.up is not None:
            self.up.pump(self.up_sid, half)
        if self.plan is not None:
            self._arm_route_timeout()
            self._arm_try_timer()
        if self.response_complete:
            self._finish()

    def _ack_down(self, size: int) -> None:
        self.conn.ack(self.sid, size)

    def _request_sent(self) -> None:
        pass

    # ================================================================== response side

    def response_headers(self, headers: list[tuple[bytes, bytes]], end: bool = False) -> None:
        if self.finished:
            return
        status = 0
        out: list[tuple[bytes, bytes]] = []
        for header in headers:
            name, value = header
            if name == b":status":
                status = int(value)
            elif name in SENSITIVE:
                out.append(never_indexed(name, value))
            elif name not in RESPONSE_DROP:
                out.append(header)
        cluster = self.cluster
        if cluster.observing and (end or not self.grpc or status != 200):
            # gRPC's outcome is its grpc-status: in these headers (trailers-only) or the trailers.
            self._observe(status, next((v for n, v in out if n == b"grpc-status"), None) if end else None)
        if self.retry is not None:
            if self._retriable_response(status, out, end):
                return
            if self.attempt > 1:
                cluster.stats.upstream_rq_retry_success += 1
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        self.status = status
        self.response_started = True
        levels = (
            self.plan.response_levels  # type: ignore[union-attr]
            if self.weighted is None
            else self.decision.response_mutations_for(self.weighted)  # type: ignore[union-attr]
        )
        if levels:
            apply_mutations(out, *levels)
        out.insert(0, (b":status", b"%d" % status))
        # A trailers-only response (gRPC errors) stays one HEADERS frame with END_STREAM.
        self._send_headers(out, end=end)
        if end:
            self.down.done = True
            self._response_sent()

    def response_data(self, data: bytes, flow: int) -> None:
        self.tx_bytes += len(data)
        down = self.down
        down.chunks.append((data, flow))
        self.conn.pump(self.sid, down)

    def response_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        if self.grpc and self.cluster.observing and self.status == 200:
            self._observe(200, next((v for n, v in headers if n == b"grpc-status"), None))
        self.down.trailers = [h for h in headers if h[0] not in RESPONSE_DROP]
        self.response_end()

    def response_end(self) -> None:
        down = self.down
        if down.done:
            return
        down.end = True
        self.conn.pump(self.sid, down)

    def _response_sent(self) -> None:
        self.response_complete = True
        if self.request_complete or self.up_half.done:
            self._finish()
        elif not self.finished:
            # RFC 9113 §8.1: a complete response ends the exchange; the rest of the request
            # is not wanted (NO_ERROR tells the client to stop sending).
            self._finish(ErrorCodes.NO_ERROR)

    def _send_headers(self, headers: list[tuple[bytes, bytes]], *, end: bool) -> None:
        if not self.conn.closed:
            self.conn.send_headers(self.sid, headers, end)

    # ================================================================== resets, endings

    def upstream_reset(self, code: int, reason: bytes = b"upstream reset") -> None:
        """The upstream stream was reset (or its connection lost) before the response ended."""
        self.up = None
        if self.finished:
            return
        if self.cluster is not None:
            self.cluster.stats.upstream_rq_rx_reset += 1
        if not self.response_started:
            return self._failed("reset", 503, reason, "UR")
        self.flags = "UR"
        # The client sees the upstream's reason; internal errors of a hop are INTERNAL_ERROR.
        self._finish(ErrorCodes.CANCEL if code == ErrorCodes.CANCEL else ErrorCodes.INTERNAL_ERROR)

    def upstream_refused(self) -> None:
        """GOAWAY named a lower stream id: the upstream never processed this one; retry it once."""
        self.up = None
        if self.finished:
            return
        if self.response_started:
            return self.local_reply(503, b"upstream connection going away", "UC")
        rules = self.retry
        if rules is not None and rules.failure_retriable("refused-stream") and self._schedule_retry():
            return
        if self.rx_bytes == 0 and self.pool is not None and self.attempt == 1:
            self.attempt = 2  # at most once; a retry policy's attempts are counted the same way
            self.up_half.done = False
            self.pool.request(self)
        else:
            self.local_reply(503, b"upstream connection going away", "UC")

    def upstream_failed(self, reason: bytes) -> None:
        if not self.finished:
            self._failed("connect-failure", 503, b"upstream connect error: " + reason, "UF")

    def downstream_reset(self, code: int) -> None:
        if self.finished:
            return
        if not self.response_complete:
            self.flags = "DC"
            self.ctx.stats.downstream_rq_rx_reset += 1
        self._finish(None, upstream_code=ErrorCodes.CANCEL)

    def local_reply(
        self, status: int, body: bytes, flags: str, *, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        if self.finished:
            return
        self.flags = flags
        self._drop_upstream(ErrorCodes.CANCEL)
        if self.response_started:
            return self._finish(ErrorCodes.INTERNAL_ERROR)
        self.status = status
        self.response_started = True
        if self.grpc:
            headers = grpc.local_reply_headers(status, body)
            body = b""
        else:
            headers = [(b":status", b"%d" % status), (b"server", self.ctx.config.server_name.encode())]
            if body:
                headers.append((b"content-type", b"text/plain"))
            headers.append((b"content-length", b"%d" % len(body)))
        if extra:
            headers += extra
        if self.decision is not None:
            levels = self.decision.response_mutations_for(None)
            if levels:
                apply_mutations(headers, *levels)
        self.tx_bytes += len(body)
        self.down.chunks.clear()
        self._send_headers(headers, end=not body)
        if body:
            self.response_data(body, 0)
            self.response_end()
        else:
            self.down.done = True
            self._response_sent()

    def _drop_upstream(self, code: int) -> None:
        up = self.up
        if up is not None:
            self.up = None
            if up.stream_closed(self.up_sid, code) and self.cluster is not None:
                self.cluster.stats.upstream_rq_tx_reset += 1
        elif self.pool is not None:
            self.pool.cancel(self)

    def _finish(self, down_code: int | None = None, upstream_code: int = ErrorCodes.CANCEL) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
        conn = self.conn
        if down_code is not None and conn.reset(self.sid, down_code):
            self.ctx.stats.http2_tx_reset += 1
        # Request bytes still queued were never sent: return their window to the client.
        pending = sum(flow for _, flow in self.up_half.chunks)
        self.up_half.chunks.clear()
        if pending:
            conn.ack(self.sid, pending)
        self._drop_upstream(upstream_code)
        self._end_attempt()
        ctx = self.ctx
        stats = ctx.stats
        elapsed_ms = (monotonic() - self.start) * 1000.0
        stats.downstream_rq_active -= 1
        stats.downstream_rq_completed += 1
        stats.downstream_rq_xx[self.status // 100 if 100 <= self.status < 600 else 0] += 1
        h = stats.downstream_rq_time
        h.counts[bisect_left(h.bounds, elapsed_ms)] += 1
        h.sum += elapsed_ms
        cluster = self.cluster
        if cluster is not None:
            if self.admitted:
                cluster.request_done(self.retry_held)
            cs = cluster.stats
            cs.upstream_rq_active -= 1
            if self.flags == "-":
                cs.upstream_rq_xx[self.status // 100 if 100 <= self.status < 600 else 0] += 1
                h = cs.upstream_rq_time
                h.counts[bisect_left(h.bounds, elapsed_ms)] += 1
                h.sum += elapsed_ms
        if ctx.access_log is not None:
            record = access_record(self, elapsed_ms)  # type: ignore[arg-type]
            record["protocol"] = conn.protocol
            ctx.access_log.log(record)
        conn.stream_finished(self)
