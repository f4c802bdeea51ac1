"""The downstream side of one QUIC connection serving HTTP/3: the HCM's streams over aioquic.

Owns one accepted QUIC connection (aioquic's ``QuicConnectionProtocol`` shell: timers and
sending) running the http_connection_manager over HTTP/3 (aioquic's ``H3Connection``): one
``http2.stream.H2Stream`` per request stream, the same relay every HTTP/2 request takes. It is
that stream's ``StreamOwner``, so routing, retries, timeouts, stats, XFCC and the access record
are the exchange's (``hcm/exchange.py``), as for HTTP/1.1 and HTTP/2; an HTTP/3 request goes to
HTTP/1.1 or HTTP/2 clusters by the cluster's protocol options, as an HTTP/2 one does.

Rules: (1) the connection joins its listener (stats, drain, idle sweep) when its handshake
completes; a refused handshake is counted by reason and never reaches the HCM. (2) A request
starts its work once every event of the datagram that opened it was handled (as HTTP/2's
``batch_done``). (3) Drain sends GOAWAY naming the next stream we would accept, then closes
once the streams are done. (4) Response DATA goes out within the stream's share of the
buffer limit (``peer.py``: the slow-reader bound).
Departure: aioquic raises its receive windows as data arrives, not as we consume it, so a
request body is bounded by the client's windows (``initial_*_window_size``) rather than by
our upstream's pace (docs/quic.md).
Must not import the listener runtime at run time (it makes these) nor know about clusters.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import TYPE_CHECKING, Any

from aioquic.buffer import Buffer
from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3Connection, encode_frame
from aioquic.h3.exceptions import H3Error
from aioquic.quic import events as qe
from h2.errors import ErrorCodes

from meshproxy.hcm.identity import downstream_peer
from meshproxy.http2.connection import CODEC
from meshproxy.http2.fields import Malformed, Underscored, checked
from meshproxy.http2.stream import H2Stream
from meshproxy.quic.handshake import PqQuicConnection
from meshproxy.quic.peer import H3_INTERNAL_ERROR, H3_NO_ERROR, H3Peer
from meshproxy.tls.errors import TlsError

if TYPE_CHECKING:
    from meshproxy.hcm.context import HttpContext
    from meshproxy.quic.endpoint import QuicEndpoint
    from meshproxy.quic.listener import QuicListenerRuntime
    from meshproxy.tls.engine import Negotiated

log = logging.getLogger("meshproxy.quic")

_GOAWAY = 0x7  # RFC 9114 §7.2.6
CRYPTO_ERROR = 0x100  # RFC 9001 §4.8: 0x100 + TLS alert
# QUIC's form of the TLS alerts the handshake raises, as the TCP engine's refusal codes.
_ALERT_CODES = {
    40: "no_shared_group",  # handshake_failure: aioquic's "No supported key share"
    42: "bad_certificate",
    45: "certificate_expired",
    116: "no_client_certificate",  # certificate_required
}


class H3Downstream(H3Peer):
    protocol = "HTTP/3"  # the access log's protocol field
    original_dst = None  # QUIC listeners do not restore original destinations

    def __init__(
        self,
        quic: PqQuicConnection,
        listener: QuicListenerRuntime,
        ctx: HttpContext,
        addr: Any,
        endpoint: QuicEndpoint,
        handshake_timeout: float,
    ) -> None:
        """``ctx``: the listener's chain context; ``handshake_timeout``: its ``crypto_handshake_timeout``
        (0: none)."""
        super().__init__(quic)
        self.ctx = ctx
        self.listener = listener
        self.peer_addr = addr
        self.streams: dict[int, H2Stream] = {}
        self.trailers_due: set[int] = set()  # streams whose request headers were read
        self.highest_request = -4  # the last request stream opened (GOAWAY names the next)
        self.starting: list[H2Stream] = []
        self.peer_ip, self.peer_label = addr[0].encode(), f"{addr[0]}:{addr[1]}"
        self.tls: Negotiated | None = None
        self.xfcc: bytes | None = None
        self.opened = False
        self.close_pending = False
        self.timed_out = False
        self.goaway_sent = False
        self.idle_since = self.loop.time()
        self.started = monotonic()
        self.sweeper = self.loop.call_later(1.0, self._sweep)
        if handshake_timeout > 0:
            self.loop.call_later(handshake_timeout, self._handshake_deadline)
        self._connection_id_issued_handler = lambda cid: endpoint.cid_issued(cid, self)
        self._connection_id_retired_handler = lambda cid: endpoint.cid_retired(cid, self)
        self._connection_terminated_handler = lambda: endpoint.terminated(self)

    # ------------------------------------------------------------------ transport-like

    @property
    def transport(self) -> H3Downstream:
        """What ``downstream_peer`` and the access record read addresses and TLS from."""
        return self

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer_addr
        if name == "sockname":
            return self.listener.bound_address()
        if name == "tls":
            return self.tls
        return default

    # ------------------------------------------------------------------ QUIC events

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        path = self.quic._network_paths[0].addr if self.quic._network_paths else addr
        if path != self.peer_addr:  # migrated (RFC 9000 §9): aioquic moved to a validated path
            self.peer_addr = path
            self.peer_ip, self.peer_label = path[0].encode(), f"{path[0]}:{path[1]}"

    def _process_events(self) -> None:
        super()._process_events()
        starting = self.starting
        if starting:  # rule 2
            self.starting = []
            for stream in starting:
                if not stream.finished:
                    stream.begin()

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.HandshakeCompleted):
            self._handshake_completed()
        elif isinstance(event, qe.ConnectionTerminated):
            self._terminated(event)
        elif isinstance(event, qe.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.downstream_reset(ErrorCodes.CANCEL)
        elif self.h3 is not None:
            try:
                for h3_event in self.h3.handle_event(event):
                    self._h3_event(h3_event)
            except H3Error as exc:  # aioquic closed the connection with the error's code
                log.info("HTTP/3 protocol error from %s: %s", self.peer_label, exc)

    def _handshake_completed(self) -> None:
        self.tls = self.quic.negotiated
        self.peer_ip, self.peer_label, self.tls, self.xfcc = downstream_peer(self.ctx, self)
        self.h3 = H3Connection(self.quic)
        self.opened = True
        listener = self.listener
        listener.handshake_done(self.peer_addr, None, self.tls, None)
        listener.connection_opened(self)
        stats = self.ctx.stats
        stats.downstream_cx_http3_total += 1
        stats.downstream_cx_http3_active += 1
        if listener.draining and not listener.graceful:
            self.goaway()

    def _handshake_deadline(self) -> None:
        if not self.opened and not self.closed:
            self.timed_out = True
            self.close(H3_NO_ERROR, "handshake timeout")

    def _terminated(self, event: qe.ConnectionTerminated) -> None:
        if self.closed:
            return
        self.closed = True
        self.sweeper.cancel()
        self.waiting.clear()
        listener = self.listener
        if not self.opened:  # a handshake that never completed (rule 1)
            alert = event.error_code - CRYPTO_ERROR
            code = _ALERT_CODES.get(alert, "tls_error" if 0 < alert < 256 else "connection_lost")
            if self.timed_out:
                code = "handshake_timeout"
            listener.handshake_done(
                self.peer_addr, None, None, TlsError(event.reason_phrase or code, code=code)
            )
            return
        self.ctx.stats.downstream_cx_http3_active -= 1
        for stream in list(self.streams.values()):
            stream.downstream_reset(ErrorCodes.CANCEL)
        self.streams.clear()
        listener.connection_closed(self)

    def _h3_event(self, event: h3e.H3Event) -> None:
        if isinstance(event, h3e.HeadersReceived):
            sid = event.stream_id
            if sid in self.trailers_due:
                self._trailers(sid, event)
            else:
                self._request(sid, event)
        elif isinstance(event, h3e.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                if event.data:
                    stream.request_data(event.data, len(event.data))
                if event.stream_ended and not stream.request_complete:
                    stream.request_end()

    def _request(self, sid: int, event: h3e.HeadersReceived) -> None:
        self.trailers_due.add(sid)
        self.highest_request = max(self.highest_request, sid)
        if self.goaway_sent:
            self.reset(sid, ErrorCodes.REFUSED_STREAM)
            return
        head = self._checked(sid, event.headers, CODEC.request_head)
        if head is None:
            return
        stream = H2Stream(self, sid, head, monotonic(), event.stream_ended)
        self.streams[sid] = stream
        self.starting.append(stream)

    def _trailers(self, sid: int, event: h3e.HeadersReceived) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            return
        trailers = self._checked(sid, event.headers, checked)
        if trailers is None:
            stream.protocol_error()
        else:
            stream.request_trailers(trailers[0])

    def _checked(self, sid: int, headers: list[tuple[bytes, bytes]], check: Any) -> Any:
        """A request's header block or trailers checked as HTTP/2's are; None: the stream was reset."""
        config = self.ctx.config
        stats = self.ctx.stats
        size = sum(len(n) + len(v) + 32 for n, v in headers)  # RFC 9114 §4.2.2's field section size
        try:
            if size > config.max_request_headers_bytes or len(headers) > config.max_headers_count:
                raise Malformed(f"header section of {size} bytes, {len(headers)} fields: over the limits")
            result = check(headers, config.headers_with_underscores)
        except Malformed as exc:
            if isinstance(exc, Underscored):
                stats.requests_rejected_with_underscores_in_headers += 1
            log.info("HTTP/3 stream %d from %s refused: %s", sid, self.peer_label, exc)
            self.reset(sid, ErrorCodes.PROTOCOL_ERROR)
            return None
        if result[-1]:
            stats.dropped_headers_with_underscores += result[-1]
        return result

    # ------------------------------------------------------------------ StreamOwner (http2/stream.py)

    def ack(self, sid: int, size: int) -> None:
        """Nothing to give back: aioquic reopened the client's windows when the data arrived."""

    def response_sent(self, keepalive_closes: bool) -> None:
        if keepalive_closes or self.listener.draining:
            self.goaway()

    def stream_finished(self, stream: H2Stream) -> None:
        self.waiting.pop(stream.sid, None)
        self.trailers_due.discard(stream.sid)
        if self.streams.get(stream.sid) is stream:
            del self.streams[stream.sid]
        if not self.streams:
            self.idle_since = self.loop.time()
            if self.goaway_sent:
                self.close()

    def stream_share(self) -> int:
        return self.listener.config.buffer_limit // max(1, len(self.streams))

    # ------------------------------------------------------------------ drain, idle, close

    def _sweep(self) -> None:
        """Once a second: each stream checks its idle timeout; an idle connection past the HCM's
        ``idle_timeout`` closes (QUIC's own idle timeout ends a silent one); one past
        ``max_connection_duration`` drains (GOAWAY), as HTTP/2's does."""
        if self.closed:
            return
        config = self.ctx.config
        now = monotonic()
        for stream in list(self.streams.values()):
            stream.check_idle(now, config.stream_idle_timeout)
        limit = config.idle_timeout
        if limit > 0 and self.is_idle() and self.loop.time() - self.idle_since > limit:
            self.close()
        duration = self.ctx.overload.scale_timeout(
            "HTTP_DOWNSTREAM_CONNECTION_MAX", config.max_connection_duration
        )
        if duration > 0 and self.opened and not self.goaway_sent and now - self.started >= duration:
            self.ctx.stats.downstream_cx_max_duration_reached += 1
            self.goaway()
        if not self.closed:
            self.sweeper = self.loop.call_later(1.0, self._sweep)

    def goaway(self) -> None:
        """Rule 3: GOAWAY naming the first request stream we will not serve; close once idle."""
        if self.goaway_sent or self.closed or self.h3 is None:
            return
        self.goaway_sent = True
        next_id = self.highest_request + 4  # client bidi streams: 0, 4, 8, …
        control = self.h3._local_control_stream_id
        assert control is not None
        frame = Buffer(capacity=8)
        frame.push_uint_var(next_id)
        self.quic.send_stream_data(control, encode_frame(_GOAWAY, frame.data))
        self.transmit()
        if not self.streams:
            self.close()

    def is_idle(self) -> bool:
        return not self.streams

    def close(self, error_code: int = H3_NO_ERROR, reason_phrase: str = "") -> None:
        """Close; a graceful close (H3_NO_ERROR) waits until the client has acknowledged every
        response byte: CONNECTION_CLOSE abandons stream data still in flight, where a TCP close
        after a flush delivers it."""
        if self.closed:
            return
        if error_code == H3_NO_ERROR and self._responses_in_flight():
            self.close_pending = True  # ``transmit`` closes once they are acknowledged
            return
        self.close_pending = False
        self.quic.close(error_code=error_code, reason_phrase=reason_phrase)
        self.transmit()

    def _responses_in_flight(self) -> bool:
        """Request streams aioquic still holds (it discards one when both directions are done)."""
        return any(sid % 4 == 0 for sid in self.quic._streams)

    def transmit(self) -> None:
        super().transmit()
        if self.close_pending and not self._responses_in_flight():
            self.close()

    def abort(self) -> None:
        self.close(H3_INTERNAL_ERROR, "draining")
