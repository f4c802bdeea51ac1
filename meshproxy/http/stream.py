"""One HTTP/1.1 request/response exchange through the proxy (Envoy's "stream"): the wire side.

Owns the HTTP/1.1 side of a request from its parsed head to its end: body relay in both
directions with flow control, the upstream connection of each attempt, response framing,
local replies written as HTTP/1.1, timers, and the WebSocket/Upgrade tunnel. Every policy
decision (rate limit, route, breaker, retry, timeout, stats, access record) is the
``hcm.exchange.Exchange`` the stream holds (``x``); this module carries its decisions out.
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
4. A request goes to the upstream once. Resending it is the exchange's retry policy; the
   stream never resends on its own (a reused connection that resets may have delivered it:
   the pool hands out no connection whose host is known to have closed it, ``upstream.py``).
5. A tunnel relays a FIN each way (``tunnel_eof``) and ends when both sides have sent one,
   or when either connection closes, or after ``stream_idle_timeout`` without a byte (the
   listener's sweep, as for any stream; Envoy applies the same timeout to upgraded streams).
   Its breaker slot is released when it ends, like any request's.
6. Reading the upstream pauses while the client's transport holds more than the listener's
   buffer limit, including when the stream starts with a backlog left by the previous one;
   reading the client pauses while the upstream's holds more than the cluster's.

It is one module of about 600 lines on purpose: the rules above bind every method, and the
request side, the response side and the endings each read and write the same flags. The
upstream request head is ``head.py``; wire vocabulary ``codec.py``. Must not import ``http2``:
a request routed to an HTTP/2 cluster goes on through ``ctx.to_http2`` (set by the listener).
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING

from meshproxy.hcm.context import (
    COARSE_TIMEOUT,
    CONNECT_REFUSED,
    OVERFLOW_PENDING,
    UPSTREAM_RESET,
    LocalReply,
)
from meshproxy.hcm.exchange import Exchange
from meshproxy.hcm.headers import edit_response, edits_response, reply_headers
from meshproxy.hcm.local_reply import final_reply
from meshproxy.hcm.upgrade import upgrade_refusal
from meshproxy.http import codec
from meshproxy.http.codec import PAUSE_PENDING_FULL, PAUSE_UPSTREAM_FULL
from meshproxy.http.head import request_head, target_refusal
from meshproxy.http.mirror import send as send_mirrors
from meshproxy.http.upstream import UpstreamConnection, close_orphan, connect_result
from meshproxy.upstream.cluster import connect_failure

if TYPE_CHECKING:
    from asyncio import Task, TimerHandle

    from meshproxy.hcm.context import HttpContext
    from meshproxy.hcm.filters import BodyEncoder
    from meshproxy.http.downstream import DownstreamConnection
    from meshproxy.upstream.breaker import ResourceManager
    from meshproxy.upstream.cluster import ClusterRuntime

# Rule 5: the sides of a tunnel that sent a FIN.
_DOWN_EOF = 1
_UP_EOF = 2

# Stream's slots, one per field set in __init__ (as words, to keep the class header short).
_FIELDS = (
    "authority body_sent chunked conn connect_task ctx deadline encoder expect finished flags has_body "
    "headers headers_done http10 keep_alive method out pending pending_size request_complete "
    "request_head request_id resp_chunk_down resp_close_delimited resp_content_length resp_lines "
    "response_complete response_started retry_timer rx_bytes start started status timer "
    "try_timer tunnel tunnel_eofs tx_bytes upgrade upstream url waiting x xff xfp"
)


class Stream:
    __slots__ = tuple(_FIELDS.split())

    def __init__(self, conn: DownstreamConnection, now: float) -> None:
        # ``now`` is time.monotonic(), the request path's one clock (uvloop's loop.time() only
        # has millisecond resolution).
        self.conn = conn
        self.ctx: HttpContext = conn.ctx
        self.start = now
        self.x: Exchange = None  # type: ignore[assignment]  # set by open(), before any policy use
        self.headers: list[tuple[bytes, bytes]] = []
        self.out: list[bytes] = []
        self.resp_lines: list[bytes] = []  # response header lines, CRLF-terminated
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
        self.finished = self.tunnel = self.body_sent = False
        self.tunnel_eofs = 0  # rule 5: _DOWN_EOF | _UP_EOF, the tunnel's sides that sent a FIN
        self.upstream: UpstreamConnection | None = None
        self.connect_task: Task[UpstreamConnection] | None = None
        self.request_head = b""
        self.pending: list[bytes] | None = None
        self.pending_size = 0
        self.resp_content_length = self.resp_chunk_down = self.resp_close_delimited = False
        self.status = 0
        self.encoder: BodyEncoder | None = None  # a filter's response body transformation
        self.flags = "-"
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.timer: TimerHandle | None = None
        self.deadline = 0.0  # monotonic time of a coarse route timeout; 0: none armed
        self.retry_timer: TimerHandle | None = None
        self.try_timer: TimerHandle | None = None
        self.waiting = False  # queued in the cluster for a connection (pending request)

    # ================================================================== request side

    def open(self) -> Exchange:
        """This stream's request is answered from now on: it starts its exchange."""
        self.started = True
        x = self.x = Exchange(self.ctx, self.start)
        return x

    def begin(self) -> None:
        """The request head is complete and this stream is the connection's active one."""
        x = self.open()
        ctx = self.ctx
        if (
            not self.keep_alive
            or self.conn.listener.draining
            or (ctx.overload.keepalive_close_fraction and x.keepalive_closes())
        ):
            self.keep_alive = False
        if self.method == b"CONNECT":
            # llhttp now treats the connection as a tunnel: nothing more can be parsed on it.
            self.keep_alive = False
            return self.local_reply(CONNECT_REFUSED)
        refused = target_refusal(self) or x.match(self.authority or b"", self.url, self.headers)
        if refused is not None:
            return self.local_reply(refused)
        self.url = x.target  # the path policy's result (rule 3)
        if ctx.filters is not None and not x.request_filters(self, self.start):
            return None  # answered, or held until resume()
        return self.route()

    def pause(self, delay: float | None) -> None:
        """A filter holds the request (body bytes wait in ``pending``): ``resume`` after ``delay``."""
        if delay is not None:  # None: the filter calls resume itself
            self.retry_timer = self.conn.loop.call_later(delay, self.resume)

    def resume(self) -> None:
        self.retry_timer = None
        if not self.finished and self.x.request_filters(self, monotonic()):
            self.route()

    def route(self) -> None:
        """The router's action for the matched route: a local reply, or the request goes on."""
        x, ctx, conn = self.x, self.ctx, self.conn
        authority = self.authority or b""
        routed = x.route(authority)
        if self.upgrade is not None and x.decision is not None:
            refused_upgrade = upgrade_refusal(ctx, x.decision.route, self.upgrade)
            if refused_upgrade is not None:
                self.keep_alive = False
                return self.local_reply(refused_upgrade)
        if type(routed) is LocalReply:
            return self.local_reply(routed)
        cluster: ClusterRuntime = routed  # type: ignore[assignment]  # not a LocalReply: a cluster
        if cluster.config.http2 is not None and not cluster.config.use_downstream_protocol:
            return ctx.to_http2(self, cluster, authority)
        refused = x.forward(
            cluster, authority, self.url, self.headers, conn.peer_ip, self.upgrade is None, conn.original_dst
        )
        if refused is not None:
            return self.local_reply(refused)
        if x.body_copy is not None and self.pending:
            for piece in self.pending:  # body bytes that arrived before this request's turn
                if piece and piece is not codec.LAST_CHUNK:
                    x.keep_body(piece)
        self.request_head = request_head(self, authority)
        if self.expect and not self.request_complete and not self.http10:  # RFC 9110 §10.1.1
            self._write_down(codec.CONTINUE_100)
        if self.x.stream_deadline:
            self._arm_deadline(self.x.stream_deadline, monotonic())
        self._send()
        if self.request_complete and x.plan.mirrors:  # type: ignore[union-attr]  # forwarded
            send_mirrors(x, self.method, authority, self.url, self.headers)
        return None

    def request_body(self, data: bytes) -> None:
        self.rx_bytes += len(data)
        if self.upgrade is not None and not self.tunnel:
            return  # no body on an upgrade request; tunnel bytes arrive through tunnel_data
        x = self.x
        if x is not None and x.body_copy is not None:
            x.keep_body(data)
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
            self._arm_timers()
            if self.x.plan is not None and self.x.plan.mirrors:
                send_mirrors(self.x, self.method, self.authority or b"", self.url, self.headers)

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

    # ================================================================== attempts

    def _send(self) -> None:
        """Start an attempt on the exchange's host: a pooled connection, or a new one."""
        x = self.x
        x.attempt_started(monotonic())
        upstream = x.cluster.acquire(x.host, x.resources)  # type: ignore[union-attr, arg-type]  # forwarded
        if upstream is not None:
            self.attach(upstream)  # type: ignore[arg-type]  # the cluster pools UpstreamConnections
        else:
            self.connect()

    def connect(self) -> None:
        x = self.x
        cluster, host = x.cluster, x.host
        assert cluster is not None and host is not None
        rm = x.resources or cluster.breakers.default
        if not cluster.can_connect(rm):
            # max_connections of the route's priority reached: wait as a pending request for a
            # connection of that priority to free up.
            if cluster.enqueue(self):
                self.waiting = True
                return
            return self.local_reply(OVERFLOW_PENDING)
        task = cluster.open_connection(host, lambda: UpstreamConnection(cluster, host, rm), rm)
        self.connect_task = task
        task.add_done_callback(self._connected)

    @property
    def resources(self) -> ResourceManager | None:
        """The breakers of this request's routing priority (the cluster's pending queue asks)."""
        return self.x.resources

    def take(self, upstream: UpstreamConnection) -> None:
        """The cluster hands this waiting stream a connection (perhaps to another host)."""
        self.waiting = False
        self.x.moved_to(upstream.host)
        self.attach(upstream)

    def _connected(self, task: Task[UpstreamConnection]) -> None:
        self.connect_task = None
        result = connect_result(task)
        if isinstance(result, BaseException):
            if not self.finished:
                reply = LocalReply(503, b"upstream connect error: " + connect_failure(result).encode(), "UF")
                self.x.upstream_failed(self, "connect-failure", reply)
        elif result is not None and self.finished:
            # The request went away while connecting: the fresh connection is still useful.
            result.cluster.release(result, self.conn.loop.time())
        elif result is not None:
            self.attach(result)

    def attach(self, upstream: UpstreamConnection) -> None:
        self.upstream = upstream
        upstream.bind(self)
        transport = self.conn.transport
        if transport is not None and transport.get_write_buffer_size() > self.conn.buffer_limit:
            upstream.pause_reading()  # rule 6: the client has not taken the last response yet
        head = self.request_head
        if self.x.retry is not None:
            head = b"%bx-envoy-attempt-count: %d\r\n\r\n" % (head[:-2], self.x.attempt)
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
            self._arm_timers()

    @property
    def client_gone(self) -> bool:
        return self.conn.closed

    def retry_after(self, delay: float) -> None:
        """The exchange retries after ``delay``: this attempt's upstream is dropped now."""
        self._drop_upstream()
        self._end_attempt()
        self.resp_lines.clear()
        self.resp_content_length = self.resp_chunk_down = self.resp_close_delimited = False
        self.status = 0
        self.retry_timer = self.conn.loop.call_later(delay, self.x.retry_due, self)

    def resend(self) -> None:
        """The exchange's next attempt: the request again, its body from the copy."""
        self.retry_timer = None
        replay = list(self.x.body_copy or ())
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
        self.x.end_attempt()
        if self.waiting:
            self.waiting = False
            self.x.cluster.dequeue(self)  # type: ignore[union-attr]  # waiting implies a cluster

    # ================================================================== timeouts

    def _arm_timers(self) -> None:
        """The request is complete: the per-try timeout and the route deadline (rule 6)."""
        x = self.x
        plan = x.plan
        if plan is None:
            return
        if plan.per_try_timeout > 0 and self.try_timer is None and x.in_flight:
            self.try_timer = self.conn.loop.call_later(plan.per_try_timeout, self._on_try_timeout)
        now = monotonic()
        self._arm_deadline(x.route_deadline(now), now)  # replaces request_timeout's (0: none)

    def _arm_deadline(self, deadline: float, now: float) -> None:
        # A timeout of a second or more is kept by the listener's deadline tick (to within
        # DEADLINE_TICK), which costs a set insertion instead of an event-loop timer.
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.deadline:
            self.conn.listener.deadlines.discard(self)
        if not deadline:
            self.deadline = 0.0
        elif deadline - now >= COARSE_TIMEOUT:
            self.deadline = deadline
            self.conn.listener.deadlines.add(self)
        else:
            self.deadline = 0.0
            self.timer = self.conn.loop.call_later(max(deadline - now, 0.0), self._on_timeout)

    def _on_try_timeout(self) -> None:
        self.try_timer = None
        self.x.try_timer_fired(self)

    def deadline_passed(self) -> None:
        """Called by the listener's deadline tick once ``deadline`` is behind us."""
        self.deadline = 0.0
        self._on_timeout()

    def _on_timeout(self) -> None:
        self.timer = None
        self.x.deadline_fired(self)

    def check_idle(self, now: float, limit: float) -> None:
        """Called by the listener's sweep: no byte either way for ``limit`` seconds ends the stream."""
        if self.x is not None:
            self.x.sweep(self, now, limit)

    # ================================================================== upstream connection

    def upstream_lost(self, exc: Exception | None) -> None:
        """The upstream connection closed while bound to this stream."""
        self.upstream = None
        if self.finished:
            return
        if self.tunnel:
            self.flags = "-"
            self.conn.transport.close()
            return self._finish()
        if not self.response_started:
            # Rule 4: the host may have read the request before it reset; only the exchange's
            # retry policy may send it again.
            return self.x.upstream_failed(self, "reset", UPSTREAM_RESET)
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
        self.local_reply(LocalReply(502, b"upstream protocol error: " + reason.encode(), "UPE"))

    # ================================================================== response side

    def response_headers(self, status: int, upstream_keep_alive: bool) -> None:
        x = self.x
        grpc_status = None
        if x.grpc or (x.retry is not None and x.retry.grpc_statuses):
            for name, value in codec.header_lines(b"".join(self.resp_lines)):
                if name == b"grpc-status":
                    grpc_status = value
        if x.response(self, status, grpc_status, monotonic()):
            return
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        self.status = status
        self.response_started = True
        lines = self.resp_lines
        no_body = status in codec.NO_BODY_STATUS or self.method == b"HEAD" or status < 200
        levels = edits_response(x)
        if levels is not None:
            headers = codec.header_lines(b"".join(lines))
            self.encoder = edit_response(x, status, headers, levels, not no_body and status != 101)
            if self.encoder is not None:
                self.resp_content_length = False  # the encoder removed it: chunked (or closed)
            lines = [codec.join_lines(headers)]
        if no_body:
            # RFC 9112 §6.3 rule 1: no body whatever the head says; a Transfer-Encoding the
            # upstream sent on a 204/304/HEAD response must not make us write a last chunk
            # (found by the fuzzer).
            self.resp_chunk_down = False
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
            parts.append(codec.connection_header(self.keep_alive, self.http10))
        parts.append(b"\r\n")
        self.out.append(b"".join(parts))

    def response_body(self, data: bytes) -> None:
        if self.encoder is not None:
            data = self.encoder.data(data)
            if not data:
                return
        self._send_body(data)

    def _send_body(self, data: bytes) -> None:
        self.tx_bytes += len(data)
        self.out.append(codec.chunk(data) if self.resp_chunk_down else data)

    def response_end(self) -> None:
        self.response_complete = True
        self.x.upstream_done(monotonic())
        if self.encoder is not None:
            tail = self.encoder.end()
            if tail:
                self._send_body(tail)
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
        if self.conn.eof:
            self.tunnel_eof(upstream=False)  # the client finished sending before the 101

    def tunnel_eof(self, *, upstream: bool) -> bool:
        """Rule 5: one side of the tunnel sent a FIN. It is relayed to the other side; once both
        have sent one the tunnel ends. Returns whether the side's transport stays open (what
        asyncio's ``eof_received`` returns)."""
        if self.finished:
            return False
        self.tunnel_eofs |= _UP_EOF if upstream else _DOWN_EOF
        up = self.upstream
        target = self.conn.transport if upstream else (up.transport if up is not None else None)
        if self.tunnel_eofs == _UP_EOF | _DOWN_EOF or target is None or target.is_closing():
            self.conn.close()  # both directions are done (or the other side is gone)
            self._drop_upstream()
            self._finish()
            return False
        target.write_eof()
        return True

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

    def local_reply(self, reply: LocalReply) -> None:
        """A response generated by the proxy; aborts the connection if a response already began."""
        if self.finished:
            return
        self.flags = reply.flags
        self._drop_upstream()
        if self.response_started:
            self.conn.abort()
            return self._finish()
        if self._body_unread() or self.conn.listener.draining:
            self.keep_alive = False
        reply = final_reply(self.ctx.config.local_reply, self, reply)
        status, body = reply.status, reply.body
        self.status = status
        self.response_started = True
        self.response_complete = True
        data = codec.local_reply(
            status,
            body,
            close=not self.keep_alive,
            extra=reply_headers(self.x, reply),
            content_type=reply.content_type,
            head_only=self.method == b"HEAD",
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
            task.add_done_callback(close_orphan)
        up = self._unbind()
        if up is not None:
            up.close()

    def _unbind(self) -> UpstreamConnection | None:
        """Let go of the upstream connection; the client's reading no longer waits on it."""
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.unbind()
            self.conn.resume(PAUSE_UPSTREAM_FULL)
        return up

    def _maybe_finish(self) -> None:
        if self.request_complete and self.response_complete and not self.finished:
            up = self._unbind()
            if up is not None:
                if up.reusable_after_response:
                    up.cluster.release(up, self.conn.loop.time())
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
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
        if self.deadline:
            self.conn.listener.deadlines.discard(self)
        conn = self.conn
        if self.started:
            self._end_attempt()
            self.x.finish(monotonic(), self, "HTTP/1.0" if self.http10 else "HTTP/1.1", conn)
        conn.stream_finished(self)
