"""One HTTP/2 request stream relayed through the proxy (Envoy's "stream" over HTTP/2): the wire side.

Owns one downstream stream from its HEADERS to its end: the upstream request headers, DATA
relayed both ways through ``Half`` queues (flow control: ``connection.py``), trailers both
ways (gRPC status lives in response trailers), RST_STREAM mapped both ways, local replies
(gRPC ones as trailers-only responses with grpc-status/grpc-message), the attempt's upstream
and the timers. Every policy decision (rate limit, route, breaker, retry, timeout, stats,
access record) is the ``hcm.exchange.Exchange`` the stream holds (``x``).

The downstream (``conn``) is an ``H2Downstream``, or ``from_http1.Http1Downstream`` for an
HTTP/1.1 request routed to an HTTP/2 cluster; the upstream (``up``, attached by ``pool``) is
an ``H2Upstream``, or ``to_http1.Http1Upstream`` for an HTTP/1.1 cluster (made by
``ctx.to_http1``). Both adapters present the interface of the HTTP/2 side they replace, so
this relay has one code path.

Rules: (1) response HEADERS go downstream at most once (``response_started``); after that a
failure can only reset the stream. (2) The stream finishes when both directions have ended,
or on a reset either way; finishing resets whichever side is still open. (3) Upstream stream
slots are returned to the pool on finish, never before. (4) A request whose HEADERS ended the
stream is complete before anything goes upstream: it carries no body and no framing upstream.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol

from h2.errors import ErrorCodes

from meshproxy.hcm import grpc
from meshproxy.hcm.context import (
    COARSE_TIMEOUT,
    CONNECT_REFUSED,
    UPSTREAM_GOING_AWAY,
    LocalReply,
)
from meshproxy.hcm.exchange import Exchange
from meshproxy.hcm.headers import edit_response, edits_response, reply_headers, upstream_request
from meshproxy.hcm.local_reply import final_reply
from meshproxy.http.codec import NO_BODY_STATUS
from meshproxy.http.mirror import send as send_mirrors
from meshproxy.http2.connection import CODEC, Half
from meshproxy.http2.fields import RESPONSE_DROP, RequestHead
from meshproxy.http2.pool import pool_for
from meshproxy.upstream.http3 import h3_pool_for

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop, TimerHandle

    from meshproxy.hcm.context import HttpContext
    from meshproxy.hcm.filters import BodyEncoder
    from meshproxy.http2.upstream import H2Upstream
    from meshproxy.upstream.cluster import ClusterRuntime


class StreamOwner(Protocol):
    """What an ``H2Stream`` needs of the connection its client is on: an ``H2Downstream``, or
    ``from_http1.Http1Downstream`` (an HTTP/1.1 client relayed to an HTTP/2 upstream)."""

    @property
    def ctx(self) -> HttpContext: ...
    @property
    def loop(self) -> AbstractEventLoop: ...
    @property
    def peer_ip(self) -> bytes: ...
    @property
    def original_dst(self) -> tuple[str, int] | None: ...
    @property
    def protocol(self) -> str: ...
    @property
    def xfcc(self) -> bytes | None: ...
    @property
    def closed(self) -> bool: ...

    def ack(self, sid: int, size: int) -> None: ...
    def pump(self, sid: int, half: Half) -> None: ...
    def reset(self, sid: int, code: int) -> bool: ...
    def response_sent(self, keepalive_closes: bool) -> None: ...
    def send_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None: ...
    def stream_finished(self, stream: H2Stream) -> None: ...
    def stream_share(self) -> int:
        """One stream's share of the connection's buffer limit (bytes)."""
        ...


ATTEMPT_COUNT = b"x-envoy-attempt-count"
UPSTREAM_PROTOCOL_ERROR = LocalReply(502, b"upstream protocol error: invalid response status", "UPE")


class H2Stream:
    __slots__ = (
        "authority",
        "conn",
        "ctx",
        "deadline",
        "down",
        "encoder",
        "finished",
        "flags",
        "grpc",
        "headers",
        "method",
        "pool",
        "request_complete",
        "request_id",
        "response_complete",
        "response_started",
        "retry_timer",
        "rx_bytes",
        "scheme",
        "sid",
        "status",
        "timer",
        "try_timer",
        "tx_bytes",
        "up",
        "up_half",
        "up_headers",
        "up_sid",
        "url",
        "x",
        "xff",
        "xfp",
    )

    def __init__(
        self,
        conn: StreamOwner,
        sid: int,
        head: RequestHead,
        now: float,
        end: bool = False,
        x: Exchange | None = None,
    ) -> None:
        """``conn``: an ``H2Downstream`` or ``from_http1.Http1Downstream``; ``head``: the request
        block split (``fields.split``, or the codec's ``request_head``, which checks it too); ``end``: the
        HEADERS frame ended the stream (rule 4); ``x``: the exchange of a request that another
        codec began (HTTP/1.1 routed to an HTTP/2 cluster)."""
        self.conn = conn
        ctx: HttpContext = conn.ctx
        self.ctx = ctx
        self.sid = sid
        (
            self.method,
            self.url,
            self.authority,
            self.scheme,
            self.xff,
            self.xfp,
            self.request_id,
            content_type,
            kept,
            _,
        ) = head
        self.grpc = content_type is not None and grpc.is_grpc(content_type)
        if conn.xfcc is not None:
            kept.append((b"x-forwarded-client-cert", conn.xfcc))
        self.headers = kept
        self.up_headers: list[tuple[bytes, bytes]] = []
        self.pool: Any = None
        self.up: H2Upstream | None = None
        self.up_sid = 0
        self.up_half = Half(self._request_sent)
        self.up_half.ack = self._ack_down
        self.up_half.end = end
        self.down = Half(self._response_sent)
        self.request_complete = end
        self.response_started = False
        self.response_complete = False
        self.finished = False
        self.status = 0
        self.encoder: BodyEncoder | None = None  # a filter's response body transformation
        self.flags = "-"
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.timer: TimerHandle | None = None
        self.deadline = 0.0  # a coarse deadline the listener's tick keeps (0: none, or ``timer``)
        self.try_timer: TimerHandle | None = None
        self.retry_timer: TimerHandle | None = None
        self.x = x if x is not None else Exchange(ctx, now)

    # ================================================================== request side

    def begin(self) -> None:
        x = self.x
        if self.method == b"CONNECT":
            return self.local_reply(CONNECT_REFUSED)
        refused = x.match(self.authority or b"", self.url, self.headers)
        if refused is not None:
            return self.local_reply(refused)
        self.url = x.target  # the path policy's result (rule 3)
        if self.ctx.filters is not None and not x.request_filters(self, x.start):
            return None  # answered, or held until resume()
        return self.route()

    def resume(self) -> None:
        """A filter that held the request (``pause``) lets the chain go on."""
        self.retry_timer = None
        if not self.finished and self.x.request_filters(self, monotonic()):
            self.route()

    def pause(self, delay: float | None) -> None:
        """A filter holds the request: the chain resumes after ``delay`` (None: the filter calls
        ``resume``). DATA waits in the request half meanwhile, bounded by the stream window."""
        if delay is not None:
            self.retry_timer = self.conn.loop.call_later(delay, self.resume)

    def route(self) -> None:
        """The router's action for the matched route: a local reply, or the request goes on."""
        authority = self.authority or b""
        routed = self.x.route(authority)
        if type(routed) is LocalReply:
            return self.local_reply(routed)
        return self.forward(routed, authority)  # type: ignore[arg-type]  # not a LocalReply: a cluster

    def forward(self, cluster: ClusterRuntime, authority: bytes) -> None:
        """Routed to ``cluster``: the exchange picks a host and admits; the first attempt starts."""
        x = self.x
        conn = self.conn
        refused = x.forward(cluster, authority, self.url, self.headers, conn.peer_ip, True, conn.original_dst)
        if refused is not None:
            return self.local_reply(refused)
        if x.body_copy is not None:
            for data, _ in self.up_half.chunks:  # DATA of the read that opened the stream
                x.keep_body(data)
        host, target, xff, xfp, rid = upstream_request(
            x, authority, self.url, self.headers, self.xff, self.xfp, self.conn.peer_ip, self.request_id
        )
        self.request_id = rid
        out = [
            (b":method", self.method),
            (b":scheme", b"https" if cluster.tls is not None else b"http"),
            (b":authority", host),
            (b":path", target),
        ]
        out += self.headers
        out.append((b"x-forwarded-for", xff))
        out.append((b"x-forwarded-proto", xfp))
        if rid is not None:
            out.append((b"x-request-id", rid))
        if x.retry is not None:
            out.append((ATTEMPT_COUNT, b"1"))  # kept last: a retry rewrites it
        self.up_headers = out
        now = monotonic()
        if x.stream_deadline:
            self._arm_at(x.stream_deadline, now)
        if self.request_complete:
            self._arm_route_timeout(now)
        self._send(now)
        if self.request_complete and x.plan.mirrors:  # type: ignore[union-attr]  # forwarded
            send_mirrors(x, self.method, authority, self.url, self.headers)
        return None

    def _send(self, now: float) -> None:
        """Start an attempt on the exchange's host: an HTTP/2 pool slot or an HTTP/1.1 connection."""
        x = self.x
        x.attempt_started(now)
        cluster, host = x.cluster, x.host
        assert cluster is not None and host is not None
        if cluster.config.http3 is not None:
            # aioquic loads with the first request to an HTTP/3 cluster, not with every proxy.
            self.pool = h3_pool_for(cluster, host, x.resources or cluster.breakers.default)
        elif cluster.config.http2 is not None:
            self.pool = pool_for(cluster, host, x.resources or cluster.breakers.default)
        else:
            self.pool = self.ctx.to_http1(cluster, host)
        if self.request_complete:
            self._arm_try_timer()
        self.pool.request(self)

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
        x = self.x
        if x.body_copy is not None:
            x.keep_body(data)
        half.chunks.append((data, flow))
        if self.up is not None:
            self.up.pump(self.up_sid, half)

    def request_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.up_half.trailers = headers
        self.request_end()

    def request_end(self) -> None:
        if self.request_complete and self.up_half.end:
            return  # rule 4: the HEADERS already ended it
        self.request_complete = True
        half = self.up_half
        half.end = True
        if self.up is not None:
            self.up.pump(self.up_sid, half)
        plan = self.x.plan
        if plan is not None and not self.finished:
            self._arm_route_timeout(monotonic())
            self._arm_try_timer()
            if plan.mirrors:
                send_mirrors(self.x, self.method, self.authority or b"", self.url, self.headers)
        if self.response_complete:
            self._finish()

    def _ack_down(self, size: int) -> None:
        self.conn.ack(self.sid, size)

    def _request_sent(self) -> None:
        pass

    # ================================================================== attempts

    def _arm_try_timer(self) -> None:
        plan = self.x.plan
        if plan is not None and plan.per_try_timeout > 0 and self.try_timer is None and self.x.in_flight:
            self.try_timer = self.conn.loop.call_later(plan.per_try_timeout, self._on_try_timeout)

    def _on_try_timeout(self) -> None:
        self.try_timer = None
        self.x.try_timer_fired(self)

    def _end_attempt(self) -> None:
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        self.x.end_attempt()

    @property
    def client_gone(self) -> bool:
        return bool(self.conn.closed)

    def retry_after(self, delay: float) -> None:
        """The exchange retries after ``delay``: this attempt's upstream stream is dropped now."""
        self._drop_upstream(ErrorCodes.CANCEL)
        self.up = None
        self._end_attempt()
        self.status = 0
        self.retry_timer = self.conn.loop.call_later(delay, self.x.retry_due, self)

    def resend(self) -> None:
        """The exchange's next attempt: a fresh request half, the body again from the copy."""
        self.retry_timer = None
        x = self.x
        self.up_headers[-1] = (ATTEMPT_COUNT, b"%d" % x.attempt)
        # A fresh request half: the whole body again from the copy. Bytes still queued from the
        # last attempt are in the copy too, so their window goes back to the client now.
        old = self.up_half
        old.discard()
        half = self.up_half = Half(self._request_sent)
        half.ack = self._ack_down
        half.chunks.extend((data, 0) for data in x.body_copy or ())
        half.end = old.end
        half.trailers = old.trailers
        self._send(monotonic())

    # ================================================================== timeouts

    def _arm_at(self, deadline: float, now: float) -> None:
        """Run ``_on_timeout`` at monotonic ``deadline`` instead of any armed one (0: none).

        A deadline a second or more away is kept by the listener's deadline tick (to within its
        DEADLINE_TICK), as HTTP/1.1's are: a set insertion per request instead of an event-loop
        timer and its cancel (5 % of the CPU per request with the compiled codec)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.deadline:
            self.ctx.listener.deadlines.discard(self)
        if not deadline:
            self.deadline = 0.0
        elif deadline - now >= COARSE_TIMEOUT:
            self.deadline = deadline
            self.ctx.listener.deadlines.add(self)
        else:
            self.deadline = 0.0
            self.timer = self.conn.loop.call_later(max(deadline - now, 0.0), self._on_timeout)

    def _arm_route_timeout(self, now: float) -> None:
        """The request is complete: the route deadline (rule 6 of the exchange)."""
        self._arm_at(self.x.route_deadline(now), now)  # replaces request_timeout's

    def deadline_passed(self) -> None:
        """Called by the listener's deadline tick once ``deadline`` is behind us."""
        self.deadline = 0.0
        self._on_timeout()

    def _on_timeout(self) -> None:
        self.timer = None
        self.x.deadline_fired(self)

    def check_idle(self, now: float, idle: float) -> None:
        """``stream_idle_timeout`` from the byte counters (0: off); called about once a second.
        (``request_timeout`` is the exchange's deadline, armed with the others.)"""
        if idle > 0:
            self.x.sweep(self, now, idle)

    def protocol_error(self) -> None:
        """The client sent what ``fields.checked`` refuses (trailers): the stream was reset."""
        self.flags = "DPE"
        self._finish()

    # ================================================================== response side

    def response_headers(self, headers: list[tuple[bytes, bytes]], end: bool = False) -> None:
        if self.finished:
            return
        status, grpc_status, out = CODEC.response_head(headers)
        if not 200 <= status <= 599:
            # Interim responses never get here; a 101 (an HTTP/1.1 upgrade the client did not ask
            # for, and which HTTP/2 cannot carry, RFC 9113 §8.6) or a status outside the range is
            # the upstream's protocol error.
            cluster = self.x.cluster
            if cluster is not None:
                cluster.stats.upstream_cx_protocol_error += 1
            return self.local_reply(UPSTREAM_PROTOCOL_ERROR)
        x = self.x
        # gRPC's outcome is its grpc-status: in these headers (trailers-only) or the trailers.
        observe = end or not self.grpc or status != 200
        if x.response(self, status, grpc_status if end else None, monotonic(), observe):
            return
        self.response_started = True
        self.status = status
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        levels = edits_response(x)
        if levels is not None:
            body = not end and status not in NO_BODY_STATUS and self.method != b"HEAD"
            self.encoder = edit_response(x, status, out, levels, body)
        out.insert(0, (b":status", b"%d" % status))
        # A trailers-only response (gRPC errors) stays one HEADERS frame with END_STREAM.
        self._send_headers(out, end=end)
        if end:
            x.upstream_done(monotonic())
            self.down.done = True
            self._response_sent()

    def response_data(self, data: bytes, flow: int) -> None:
        down = self.down
        if self.encoder is not None:
            data = self.encoder.data(data)
            if not data:  # held by the encoder (bounded): the upstream may send more
                if flow and down.ack is not None:
                    down.ack(flow)
                return
        self.tx_bytes += len(data)
        down.chunks.append((data, flow))
        self.conn.pump(self.sid, down)

    def response_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        x = self.x
        if self.grpc and self.status == 200 and x.cluster is not None and x.cluster.observing:
            x.observe(200, next((v for n, v in headers if n == b"grpc-status"), None), monotonic())
        self.down.trailers = [h for h in headers if h[0] not in RESPONSE_DROP]
        self.response_end()

    def response_end(self) -> None:
        down = self.down
        if down.done:
            return
        if self.response_started:
            self.x.upstream_done(monotonic())
        if self.encoder is not None:
            tail = self.encoder.end()
            if tail:
                self.tx_bytes += len(tail)
                down.chunks.append((tail, 0))
        down.end = True
        self.conn.pump(self.sid, down)

    def _response_sent(self) -> None:
        self.response_complete = True
        self.conn.response_sent(
            bool(self.ctx.overload.keepalive_close_fraction and self.x.keepalive_closes())
        )
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
        cluster = self.x.cluster
        if cluster is not None:
            cluster.stats.upstream_rq_rx_reset += 1
        if not self.response_started:
            return self.x.upstream_failed(self, "reset", LocalReply(503, reason, "UR"))
        self.flags = "UR"
        # The client sees the upstream's reason; internal errors of a hop are INTERNAL_ERROR.
        self._finish(ErrorCodes.CANCEL if code == ErrorCodes.CANCEL else ErrorCodes.INTERNAL_ERROR)

    def upstream_refused(self) -> None:
        """GOAWAY named a lower stream id: the upstream never processed this one; retry it once."""
        self.up = None
        if self.finished:
            return
        if self.response_started:
            return self.local_reply(UPSTREAM_GOING_AWAY)
        x = self.x
        if x.retry is not None:
            delay = x.failed("refused-stream", not self.client_gone)
            if delay is not None:
                return self.retry_after(delay)
        if self.rx_bytes == 0 and self.pool is not None and x.attempt == 1:
            x.attempt = 2  # at most once; a retry policy's attempts are counted the same way
            self.up_half.done = False
            self.pool.request(self)
        else:
            self.local_reply(UPSTREAM_GOING_AWAY)

    def upstream_failed(self, reason: bytes) -> None:
        if not self.finished:
            self.x.upstream_failed(
                self, "connect-failure", LocalReply(503, b"upstream connect error: " + reason, "UF")
            )

    def downstream_reset(self, code: int) -> None:
        if self.finished:
            return
        if not self.response_complete:
            self.flags = "DC"
            self.ctx.stats.downstream_rq_rx_reset += 1
        self._finish(None, upstream_code=ErrorCodes.CANCEL)

    def local_reply(self, reply: LocalReply) -> None:
        if self.finished:
            return
        self.flags = reply.flags
        self._drop_upstream(ErrorCodes.CANCEL)
        if self.response_started:
            return self._finish(ErrorCodes.INTERNAL_ERROR)
        reply = final_reply(self.ctx.config.local_reply, self, reply)
        status, body = reply.status, reply.body
        self.status = status
        self.response_started = True
        if self.grpc:
            headers = grpc.local_reply_headers(status, body, reply.grpc_status)
            body = b""
        else:
            headers = [(b":status", b"%d" % status), (b"server", self.ctx.config.server_name.encode())]
            if body:
                headers.append((b"content-type", reply.content_type))
            headers.append((b"content-length", b"%d" % len(body)))
        extra = reply_headers(self.x, reply)
        if extra:
            headers += extra
        self.tx_bytes += len(body)
        self.down.chunks.clear()
        self._send_headers(headers, end=not body)
        if body:
            self.response_data(body, 0)
            down = self.down
            down.end = True
            self.conn.pump(self.sid, down)
        else:
            self.down.done = True
            self._response_sent()

    def _drop_upstream(self, code: int) -> None:
        up = self.up
        if up is not None:
            self.up = None
            cluster = self.x.cluster
            if up.stream_closed(self.up_sid, code) and cluster is not None:
                cluster.stats.upstream_rq_tx_reset += 1
        elif self.pool is not None:
            self.pool.cancel(self)

    def _finish(self, down_code: int | None = None, upstream_code: int = ErrorCodes.CANCEL) -> None:
        if self.finished:
            return
        self.finished = True
        for timer in (self.timer, self.retry_timer):
            if timer is not None:
                timer.cancel()
        self.timer = self.retry_timer = None
        if self.deadline:
            self.ctx.listener.deadlines.discard(self)
            self.deadline = 0.0
        conn = self.conn
        if down_code is not None and conn.reset(self.sid, down_code):
            self.ctx.stats.http2_tx_reset += 1
        # Bytes still queued either way will never be sent: released now, their windows given
        # back (not held until the connection ends, nor until a WINDOW_UPDATE wakes the queue).
        self.up_half.discard()
        self._drop_upstream(upstream_code)
        self.down.discard()
        self._end_attempt()
        self.x.finish(monotonic(), self, conn.protocol, conn)
        conn.stream_finished(self)
