"""The upstream side of HTTP/2: one multiplexed client connection to one host.

Owns an h2 client connection carrying many ``H2Stream`` exchanges: opening streams within
the peer's ``max_concurrent_streams``, handing response events to each stream, GOAWAY
(streams the server never processed are retried by their stream; no new stream is opened),
and telling its pool when a stream slot frees up or the connection is gone.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from h2 import events as ev
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError

from meshproxy.http2.connection import H2Peer

if TYPE_CHECKING:
    import asyncio

    from meshproxy.http2.pool import H2Pool
    from meshproxy.http2.stream import H2Stream

log = logging.getLogger("meshproxy.http2")

# The largest response header block accepted from an upstream, in bytes and in fields (Envoy's
# defaults for a cluster's max_response_headers_kb and max_headers_count, which are not compiled).
MAX_RESPONSE_HEADERS = 60 * 1024
MAX_RESPONSE_HEADERS_COUNT = 100


class H2Upstream(H2Peer):
    def __init__(self, pool: H2Pool) -> None:
        super().__init__(
            pool.options,
            client=True,
            max_header_list=MAX_RESPONSE_HEADERS,
            max_headers=MAX_RESPONSE_HEADERS_COUNT,
        )
        self.pool = pool
        self.streams: dict[int, H2Stream] = {}
        self.ready = False  # the server's SETTINGS arrived: its stream limit is known
        self.goaway = False
        self.idle_since = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None  # armed by the pool while idle

    # ------------------------------------------------------------------ pool interface

    def capacity(self) -> int:
        if self.closed or self.goaway or not self.ready:
            return 0
        h2 = self.h2
        if h2.highest_outbound_stream_id is not None and h2.highest_outbound_stream_id > 2**31 - 1000:
            return 0  # stream ids nearly exhausted: let the connection drain
        return min(h2.remote_settings.max_concurrent_streams, self.pool.max_streams) - len(self.streams)

    def open_stream(self, stream: H2Stream, headers: list[tuple[bytes, bytes]], end: bool) -> int:
        h2 = self.h2
        sid = h2.get_next_available_stream_id()
        h2.send_headers(sid, headers, end_stream=end)
        self.streams[sid] = stream
        stream.down.ack = lambda n, sid=sid: self.ack(sid, n)  # sid bound per stream by the default
        self.want_flush()
        return sid

    def stream_closed(self, sid: int, code: int) -> bool:
        """The relay is done with ``sid``: reset it if still open; True when a reset was sent."""
        sent = False
        if self.streams.pop(sid, None) is not None:
            sent = self.reset(sid, code)
            self.pool.released(self)
        return sent

    def close(self) -> None:
        if not self.closed:
            try:
                self.h2.close_connection()
                self.flush()
            except ProtocolError:
                pass
            self.closed = True
            self.transport.close()

    def is_reusable(self) -> bool:
        return self.capacity() > 0

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.pool.cluster.stats.upstream_cx_http2_total += 1
        self.pool.cluster.stats.upstream_cx_active += 1
        self.start(transport, self.pool.cluster.config.buffer_limit)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.waiting.clear()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.pool.cluster.stats.upstream_cx_active -= 1
        self.pool.cluster.connection_closed(self.pool.resources)  # gives back its max_connections slot
        self.pool.lost(self)
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.upstream_reset(ErrorCodes.CANCEL, b"upstream connection closed")

    def protocol_error(self, exc: ProtocolError) -> None:
        self.pool.cluster.stats.upstream_cx_protocol_error += 1
        log.warning(
            "cluster %s: HTTP/2 protocol error from %s: %s",
            self.pool.cluster.config.name,
            self.pool.host.label,
            exc,
        )

    # ------------------------------------------------------------------ h2 events

    def handle(self, event: ev.Event) -> None:
        t = type(event)
        sid = getattr(event, "stream_id", 0)
        if t is ev.DataReceived:
            stream = self.streams.get(sid)
            if stream is not None:
                stream.response_data(event.data, event.flow_controlled_length)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
            elif event.flow_controlled_length:  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
                self.ack(sid, event.flow_controlled_length)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
        elif t is ev.ResponseReceived:
            stream = self.streams.get(sid)
            if stream is not None:
                stream.response_headers(event.headers, event.stream_ended is not None)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
        elif t is ev.StreamEnded:
            stream = self.streams.get(sid)
            if stream is not None and not stream.finished:
                if stream.up_half.done:
                    # Ended both ways: the stream is closed (RFC 9113 §5.1), its slot free now,
                    # and there is nothing to reset when the relay lets go of it.
                    del self.streams[sid]
                    self.pool.released(self)
                stream.response_end()
        elif t is ev.TrailersReceived:
            stream = self.streams.get(sid)
            if stream is not None:
                stream.response_trailers(event.headers)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
        elif t is ev.WindowUpdated:
            self.window_opened(sid)
        elif t is ev.StreamReset:
            stream = self.streams.pop(sid, None)
            if stream is not None:
                self.pool.released(self)
                if event.error_code == ErrorCodes.REFUSED_STREAM and not stream.response_started:  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
                    stream.upstream_refused()
                else:
                    stream.upstream_reset(event.error_code)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)
        elif t is ev.RemoteSettingsChanged:
            if not self.ready:
                self.ready = True
            self.pool.released(self)
        elif t is ev.ConnectionTerminated:
            self._goaway(event.last_stream_id)  # type: ignore[attr-defined]  # h2 event, narrowed by type(event) is (mypy narrows only isinstance)

    def _goaway(self, last: int | None) -> None:
        self.goaway = True
        self.pool.cluster.stats.upstream_cx_close_notify += 1
        self.pool.lost(self)
        last = last if last is not None else 2**31
        for sid in [s for s in self.streams if s > last]:
            stream = self.streams.pop(sid)
            stream.upstream_refused()
        if not self.streams:
            self.close()
