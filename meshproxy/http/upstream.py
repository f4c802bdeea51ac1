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

from meshproxy.http import codec
from meshproxy.http.codec import HOP_BY_HOP, PAUSE_UPSTREAM_FULL

_SPECIAL_LENGTHS = frozenset(len(n) for n in (*HOP_BY_HOP, b"content-length"))

if TYPE_CHECKING:
    from meshproxy.http.stream import Stream
    from meshproxy.upstream.cluster import ClusterRuntime, Host


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, cluster: ClusterRuntime, host: Host) -> None:
        self.cluster = cluster
        self.host = host
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made, before any use
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
        self.connection_named: list[bytes] = []

    # ------------------------------------------------------------------ pool interface

    def is_reusable(self) -> bool:
        return not self.closed and not self.transport.is_closing()

    def bind(self, stream: Stream) -> None:
        self.stream = stream
        self.requests += 1
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
        self.transport = transport  # type: ignore[assignment]  # asyncio passes a BaseTransport; stream transports are Transports
        transport.set_write_buffer_limits(high=self.cluster.config.buffer_limit)  # type: ignore[attr-defined]  # a Transport method; connection_made is typed with BaseTransport
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
        self.cluster.connection_closed()
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

    def on_header(self, name: bytes, value: bytes) -> None:
        stream = self.stream
        if stream is None or stream.response_started:
            return  # trailers of a chunked response: not relayed over HTTP/1.1
        # Only names as long as a hop-by-hop one or content-length need a closer look; every
        # other header becomes its output line at once, its name's case kept as received.
        if len(name) in _SPECIAL_LENGTHS:
            lname = name.lower()
            if lname in HOP_BY_HOP:
                if lname == b"transfer-encoding":
                    stream.resp_chunk_down = True
                elif lname == b"connection":
                    named = [t.strip().lower() for t in value.split(b",")]
                    self.connection_named.extend(t for t in named if t not in (b"close", b"keep-alive", b""))
                return
            if lname == b"content-length":
                stream.resp_content_length = True
        stream.resp_lines.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        stream = self.stream
        if stream is None:
            return
        status = self.parser.get_status_code()
        if self.connection_named:
            # RFC 9110 §7.6.1: the fields a Connection header names are hop-by-hop too.
            named = self.connection_named
            kept = [h for h in codec.header_lines(b"".join(stream.resp_lines)) if h[0] not in named]
            stream.resp_lines = [codec.join_lines(kept)]
            self.connection_named = []
        if 100 <= status < 200 and status != 101:
            # An interim response (100, 103): dropped; the final one follows.
            stream.resp_lines.clear()
            stream.resp_content_length = False
            stream.resp_chunk_down = False
            return
        stream.response_headers(status, self.parser.should_keep_alive())
        if self.stream is not stream:
            return  # the stream let go of this connection (a retry): the rest is discarded
        if stream.method == b"HEAD" and status != 101:
            # llhttp cannot know a HEAD response has no body: end it here, parse afresh next time.
            self.fresh_parser_needed = True
            self.reusable_after_response = self.parser.should_keep_alive()
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


def connect_result(task: asyncio.Task[UpstreamConnection]) -> UpstreamConnection | BaseException | None:
    """A connect task's outcome: the connection, the error, or None when it was cancelled."""
    if task.cancelled():
        return None
    return task.exception() or task.result()


def close_orphan(task: asyncio.Task[UpstreamConnection]) -> None:
    """A connect finished after its request was gone: close what it opened."""
    result = connect_result(task)
    if isinstance(result, UpstreamConnection):
        result.close()
