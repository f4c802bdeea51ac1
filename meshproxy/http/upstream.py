"""The upstream side of an HTTP/1.1 exchange: one pooled connection to one host.

Owns a client connection to an upstream host: response parsing through httptools callbacks
that it hands to the bound stream, flow control back towards the downstream, 1xx handling,
the no-body cases llhttp cannot know by itself (responses to HEAD), the switch to a raw
tunnel after ``101 Switching Protocols``, and telling the pool when it is gone so a closed
connection is never handed to another request.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools

from meshproxy.http.codec import ResponseHead
from meshproxy.http.stream import PAUSE_UPSTREAM_FULL

# Bound on an upstream response's header block (Envoy's default max_response_headers_kb: 60).
MAX_RESPONSE_HEAD = 60 * 1024

if TYPE_CHECKING:
    from meshproxy.http.stream import Stream
    from meshproxy.upstream.cluster import ClusterRuntime, Host


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, cluster: ClusterRuntime, host: Host) -> None:
        self.cluster = cluster
        self.host = host
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpResponseParser(self)
        self.stream: Stream | None = None
        self.idle_since = 0.0
        self.requests = 0
        self.closed = False
        self.tunnel = False
        self.reading_paused = False
        self.fresh_parser_needed = False
        self.reusable_after_response = False
        self.held: list[bytes] | None = None  # tunnel bytes waiting for the 101
        # The response head being read: bytes of an incomplete head kept between reads
        # (bounded by MAX_RESPONSE_HEAD), and the buffer llhttp is parsing with our position in it.
        self.head_pending = False
        self.head_buf = b""
        self.scan = b""
        self.scan_pos = 0

    # ------------------------------------------------------------------ pool interface

    def is_reusable(self) -> bool:
        return not self.closed and not self.transport.is_closing()

    def bind(self, stream: Stream) -> None:
        self.stream = stream
        self.requests += 1
        self.head_pending = True
        self.head_buf = b""
        self.reusable_after_response = False
        if self.fresh_parser_needed:
            self.parser = httptools.HttpResponseParser(self)
            self.fresh_parser_needed = False

    def unbind(self) -> None:
        self.stream = None
        if self.reading_paused:
            self.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def pause_reading(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=self.cluster.config.buffer_limit)  # type: ignore[attr-defined]
        self.host.cx_active += 1
        self.cluster.stats.upstream_cx_active += 1

    def data_received(self, data: bytes) -> None:
        stream = self.stream
        if self.tunnel:
            if stream is not None:
                stream.tx_bytes += len(data)
                stream._write_down(data)
            return
        if stream is None:
            # Bytes on an idle connection are a protocol violation: never reuse it.
            self.close()
            return
        pending = self.head_pending
        if pending:
            self.scan = self.head_buf + data if self.head_buf else data
            self.scan_pos = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.tunnel = True
            stream.start_tunnel(data[exc.args[0] :])
            return
        except httptools.HttpParserError as exc:
            self.close()
            stream.upstream_protocol_error(str(exc) or "malformed response")
            return
        if pending and self.head_pending:
            rest = self.scan[self.scan_pos :]
            if len(rest) > MAX_RESPONSE_HEAD:
                self.close()
                stream.upstream_protocol_error("response header block too large")
                return
            self.head_buf = rest
        stream = self.stream
        if stream is not None:
            stream.flush()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        reused = self.requests > 1
        self.closed = True
        self.host.cx_active -= 1
        stats = self.cluster.stats
        stats.upstream_cx_active -= 1
        stream = self.stream
        if stream is None:
            stats.upstream_cx_destroy_remote += 1
            self.cluster.forget(self)
            return
        self.stream = None
        stream.upstream_lost(reused, exc)

    def pause_writing(self) -> None:
        stream = self.stream
        if stream is not None:
            stream.conn.pause(PAUSE_UPSTREAM_FULL)

    def resume_writing(self) -> None:
        stream = self.stream
        if stream is not None:
            stream.conn.resume(PAUSE_UPSTREAM_FULL)

    # ------------------------------------------------------------------ parser callbacks

    # No on_header: httptools then skips per-header callbacks, and the header block is taken
    # from the bytes read (``codec.ResponseHead``), which costs one regex scan in C.

    def on_headers_complete(self) -> None:
        stream = self.stream
        if stream is None:
            return
        scan, pos = self.scan, self.scan_pos
        end = scan.find(b"\r\n\r\n", pos)
        first = scan.find(b"\r\n", pos)
        block = scan[first + 2 : end + 2] if first < end else b""
        self.scan_pos = end + 4
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # an interim response (100, 103): dropped; the final one follows
        self.head_pending = False
        self.head_buf = b""
        self.scan = b""
        keep_alive = self.parser.should_keep_alive()
        stream.response_headers(status, ResponseHead(block), keep_alive)
        if stream.method == b"HEAD" and status != 101:
            # llhttp cannot know a HEAD response has no body: end it here, parse afresh next time.
            self.fresh_parser_needed = True
            self.reusable_after_response = keep_alive
            stream.response_end()

    def on_body(self, body: bytes) -> None:
        stream = self.stream
        if stream is not None:
            stream.response_body(body)

    def on_message_complete(self) -> None:
        stream = self.stream
        if stream is None or stream.response_complete or (stream.status < 200 and stream.status != 101):
            return
        if stream.status == 101:
            return  # HttpParserUpgrade follows and switches to the tunnel
        self.reusable_after_response = (
            self.parser.should_keep_alive()
            and stream.request_complete
            and (
                self.cluster.config.max_requests_per_connection == 0
                or self.requests < self.cluster.config.max_requests_per_connection
            )
        )
        stream.response_end()
