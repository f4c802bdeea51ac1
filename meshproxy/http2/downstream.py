"""The downstream side of an HTTP/2 connection (TLS with ALPN h2, or cleartext prior knowledge).

Owns one accepted connection running the http_connection_manager filter over HTTP/2: the h2
server state machine, one ``H2Stream`` per request stream, the flood bounds (``guard.py``),
what a request's header block must be (the codec's ``request_head``, ``fields.checked`` for
trailers), GOAWAY on drain, on abuse and at
``max_connection_duration``, the once-a-second sweep of its streams' timeouts, and the
connection's place in the listener (idle, drain).

A new stream starts its work (routing, an upstream) only once every event of the read that
opened it was handled: a stream the client reset in that same read never costs an upstream
connection, and the read's premature resets are counted before any of its streams starts.
Per-request work lives in ``stream.py``; sending with flow control in ``connection.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any, TypeVar

from h2 import events as ev
from h2.errors import ErrorCodes
from h2.exceptions import DenialOfServiceError, ProtocolError, StreamClosedError

from meshproxy.hcm.identity import downstream_peer
from meshproxy.http2.connection import CODEC, H2Peer
from meshproxy.http2.fields import Malformed, Underscored, checked
from meshproxy.http2.guard import FloodGuard
from meshproxy.http2.stream import H2Stream

if TYPE_CHECKING:
    from meshproxy.hcm.context import HttpContext
    from meshproxy.tls.engine import Negotiated

log = logging.getLogger("meshproxy.http2")

_Checked = TypeVar("_Checked", bound=tuple[Any, ...])  # a check's result; its last item: fields dropped


class H2Downstream(H2Peer):
    protocol = "HTTP/2"  # the access log's protocol field

    def __init__(
        self, ctx: HttpContext, preface: bytes = b"", original_dst: tuple[str, int] | None = None
    ) -> None:
        config = ctx.config
        super().__init__(
            config.http2,
            client=False,
            max_header_list=config.max_request_headers_bytes,
            max_headers=config.max_headers_count,
        )
        self.ctx = ctx
        self.listener = ctx.listener
        self.streams: dict[int, H2Stream] = {}
        self.starting: list[H2Stream] = []  # opened by the read being handled; begun after it
        self.opened = monotonic()
        self.guard = FloodGuard(self.opened)
        self.preface = preface  # bytes a protocol detector read before handing us the connection
        self.idle_since = self.loop.time()
        self.peer_ip = b""
        self.original_dst = original_dst  # restored by the listener's original_dst filter
        self.peer_label = ""
        self.tls: Negotiated | None = None
        self.xfcc: bytes | None = None
        self.goaway_sent = False
        self.goaway_last = 0
        self.remote_goaway = False
        self.sweeper: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer_ip, self.peer_label, self.tls, self.xfcc = downstream_peer(self.ctx, transport)
        self.listener.connection_opened(self)
        stats = self.ctx.stats
        stats.downstream_cx_http2_total += 1
        stats.downstream_cx_http2_active += 1
        self.start(transport, self.listener.config.buffer_limit)
        config = self.ctx.config
        if config.stream_idle_timeout > 0 or config.max_connection_duration > 0:
            self.sweeper = self.loop.call_later(1.0, self._sweep)
        if self.listener.draining and not self.listener.graceful:
            self.goaway()  # (in a graceful drain, after its first response: stream.py)
        if self.preface:
            data, self.preface = self.preface, b""
            self.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.waiting.clear()
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        self.ctx.stats.downstream_cx_http2_active -= 1
        self.listener.connection_closed(self)
        for stream in list(self.streams.values()):
            stream.downstream_reset(ErrorCodes.CANCEL)
        self.streams.clear()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; streams end in connection_lost

    # ------------------------------------------------------------------ h2 events

    def handle(self, event: ev.Event) -> None:
        t = type(event)
        if t is ev.DataReceived:
            stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
            if stream is not None:
                stream.request_data(event.data, event.flow_controlled_length)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
            elif event.flow_controlled_length:  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
                self.ack(event.stream_id, event.flow_controlled_length)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
        elif t is ev.RequestReceived:
            if self.goaway_sent and event.stream_id > self.goaway_last:  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
                self.reset(event.stream_id, ErrorCodes.REFUSED_STREAM)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
                return
            head = self._checked(event.stream_id, event.headers, CODEC.request_head)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
            if head is None:
                return
            ended = event.stream_ended is not None  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
            stream = H2Stream(self, event.stream_id, head, monotonic(), ended)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
            self.streams[event.stream_id] = stream  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
            self.starting.append(stream)
        elif t is ev.StreamEnded:
            stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
            if stream is not None and not stream.request_complete:  # (complete: its HEADERS ended it)
                stream.request_end()
        elif t is ev.WindowUpdated:
            self.window_opened(event.stream_id)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
        elif t is ev.TrailersReceived:
            stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
            if stream is not None:
                trailers = self._checked(event.stream_id, event.headers, checked)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
                if trailers is None:
                    stream.protocol_error()
                else:
                    stream.request_trailers(trailers[0])
        elif t is ev.StreamReset:
            self.ctx.stats.http2_rx_reset += 1
            stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
            if stream is not None:
                premature = self.guard.reset(stream.x.start, stream.response_started, monotonic())
                stream.downstream_reset(event.error_code)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
                if premature:
                    self.ctx.stats.downstream_rq_too_many_premature_resets += 1
                    self.calm("rapid reset (too many premature resets)")
        elif t is ev.PingReceived or t is ev.RemoteSettingsChanged:
            if self.guard.control(monotonic()):
                self.calm("SETTINGS/PING flood")
        elif t is ev.ConnectionTerminated:
            self.remote_goaway = True
            if not self.streams:
                self.close()
        if self.write_paused:
            self._check_outbound()

    def batch_done(self) -> None:
        """The read is handled: its streams that are still open start their work."""
        starting = self.starting
        if starting:
            self.starting = []
            for stream in starting:
                if not stream.finished:
                    stream.begin()

    def _checked(
        self,
        sid: int,
        headers: list[tuple[bytes, bytes]],
        check: Callable[[list[tuple[bytes, bytes]], str], _Checked],
    ) -> _Checked | None:
        """``check(headers, headers_with_underscores)``: ``fields.checked`` (trailers) or the
        codec's ``request_head``; None when it refused the block (the stream was reset)."""
        stats = self.ctx.stats
        try:
            result = check(headers, self.ctx.config.headers_with_underscores)
        except Malformed as exc:
            if isinstance(exc, Underscored):
                stats.requests_rejected_with_underscores_in_headers += 1
            else:
                stats.http2_rx_messaging_error += 1
            log.info("HTTP/2 stream %d from %s refused: %s", sid, self.peer_label, exc)
            if self.reset(sid, ErrorCodes.PROTOCOL_ERROR):
                stats.http2_tx_reset += 1
            return None
        dropped = result[-1]
        if dropped:
            stats.dropped_headers_with_underscores += dropped
        return result

    def _check_outbound(self) -> None:
        """Envoy's max_outbound_frames: a peer that makes us queue but does not read is cut off
        (called after an event while writing is paused)."""
        if not self.closed:
            queued = self.transport.get_write_buffer_size()
            if queued > self.listener.config.buffer_limit + self.options.max_outbound_frames * 9:
                self.ctx.stats.http2_outbound_flood += 1
                self.transport.abort()

    def protocol_error(self, exc: ProtocolError) -> None:
        stats = self.ctx.stats
        stats.http2_rx_messaging_error += 1
        stats.http2_goaway_sent += 1
        if isinstance(exc, DenialOfServiceError):
            stats.http2_header_overflow += 1
        log.info("HTTP/2 protocol error from %s: %s", self.peer_label, exc)

    def calm(self, why: str) -> None:
        """GOAWAY ENHANCE_YOUR_CALM and close: the peer is abusing the connection."""
        if self.closed:
            return
        log.warning("HTTP/2 %s from %s: closing with ENHANCE_YOUR_CALM", why, self.peer_label)
        stats = self.ctx.stats
        stats.http2_goaway_sent += 1
        stats.http2_flood += 1
        for stream in list(self.streams.values()):
            stream.downstream_reset(ErrorCodes.CANCEL)
        self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
        self.flush()
        self.closed = True
        self.transport.close()

    # ------------------------------------------------------------------ streams, drain

    def send_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        try:
            self.h2.send_headers(sid, headers, end_stream=end)
        except (StreamClosedError, ProtocolError):  # the stream was reset meanwhile
            return
        self.want_flush()

    def _sweep(self) -> None:
        """Once a second: each stream checks its timeouts; the connection its max duration."""
        self.sweeper = None
        if self.closed:
            return
        config = self.ctx.config
        now = monotonic()
        for stream in list(self.streams.values()):
            stream.check_idle(now, config.stream_idle_timeout)
        duration = self.ctx.overload.scale_timeout(
            "HTTP_DOWNSTREAM_CONNECTION_MAX", config.max_connection_duration
        )
        if duration > 0 and not self.goaway_sent and now - self.opened >= duration:
            # Envoy's max_connection_duration: drain (GOAWAY), close once the streams are done.
            self.ctx.stats.downstream_cx_max_duration_reached += 1
            self.goaway()
        if not self.closed:
            self.sweeper = self.loop.call_later(1.0, self._sweep)

    def stream_finished(self, stream: H2Stream) -> None:
        self.guard.stream_closed()
        self.waiting.pop(stream.sid, None)
        if self.streams.get(stream.sid) is stream:
            del self.streams[stream.sid]
        if not self.streams:
            self.idle_since = self.loop.time()
            if self.goaway_sent or self.remote_goaway:
                self.close()

    def stream_share(self) -> int:
        return self.listener.config.buffer_limit // max(1, len(self.streams))

    def response_sent(self, keepalive_closes: bool) -> None:
        """A response is out. Under ``disable_http_keepalive`` (``keepalive_closes``) or while
        the listener drains (gracefully: still accepting), drain (GOAWAY) now, as Envoy does at
        a response's end; streams already open still complete."""
        if keepalive_closes or self.listener.draining:
            self.goaway()

    def goaway(self) -> None:
        """Graceful drain: GOAWAY(NO_ERROR) naming the last stream we accepted; close once idle."""
        if self.goaway_sent or self.closed:
            return
        self.goaway_sent = True
        self.goaway_last = self.h2.highest_inbound_stream_id or 0
        self.ctx.stats.http2_goaway_sent += 1
        self.send_goaway(self.goaway_last)
        if not self.streams:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        if not self.goaway_sent and not self.remote_goaway:
            self.goaway()
            return
        self.flush()
        self.closed = True
        self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.transport.abort()

    def is_idle(self) -> bool:
        return not self.streams
