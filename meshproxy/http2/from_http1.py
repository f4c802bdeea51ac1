"""HTTP/1.1 → HTTP/2: an HTTP/1.1 request relayed to a cluster that speaks HTTP/2.

Owns ``Http1Downstream``, the adapter ``http.stream.Stream.begin`` hands a request to once
routing chose an HTTP/2 cluster (``relay_over_http2``). To ``H2Stream`` it is the HTTP/2
downstream connection it already talks to (``send_headers``, ``pump``, ``ack``, ``reset``,
``stream_finished``); to ``http.downstream.DownstreamConnection`` it takes the place of the
``Stream`` (``request_body``, ``request_end``, ``downstream_lost``, ``local_reply``,
``check_idle``), so the rest of the request and the upstream policy run in ``H2Stream``.
The translation: the request head becomes HEADERS (method, path, ``:authority`` from Host,
hop-by-hop fields already dropped by the parser), the body DATA; the response head becomes a
status line with the upstream's content-length, else ``content-length: 0`` for an empty
response, chunked framing for HTTP/1.1, or close-delimited for HTTP/1.0; trailers are dropped.

Flow control: request bytes wait in ``H2Stream`` within the upstream's windows; past the
listener's buffer limit unacknowledged, reading from the client pauses. Response DATA is
written while the client's socket takes it, and each chunk written reopens the upstream's
window; a full socket (``pause_reading``, so named by the connection that calls it) stops
that. Must not know about routing or retries.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

from meshproxy.hcm.context import LocalReply
from meshproxy.http import codec
from meshproxy.http.codec import PAUSE_PENDING_FULL, PAUSE_UPSTREAM_FULL
from meshproxy.http2.fields import split
from meshproxy.http2.stream import H2Stream

if TYPE_CHECKING:
    from meshproxy.http.stream import Stream
    from meshproxy.http2.connection import Half
    from meshproxy.upstream.cluster import ClusterRuntime

_UPGRADE_REFUSED = LocalReply(501, b"Upgrade to an HTTP/2 cluster is not supported", "-")


def relay_over_http2(stream: Stream, cluster: ClusterRuntime, authority: bytes) -> None:
    """Carry on ``stream`` (its head parsed, routed to ``cluster``) as an HTTP/2 exchange;
    the request keeps the exchange (policy, stats) it began with."""
    if stream.upgrade is not None:
        return stream.local_reply(_UPGRADE_REFUSED)
    front = Http1Downstream(stream)
    conn = stream.conn
    if conn.parsing is stream:
        conn.parsing = front  # type: ignore[assignment]  # it stands in for the Stream
    if conn.active is stream:
        conn.active = front  # type: ignore[assignment]  # Http1Downstream stands in for the Stream
    headers = [
        (b":method", stream.method),
        (b":scheme", front.ctx.scheme),
        (b":authority", authority),
        (b":path", stream.url),
        *stream.headers,
    ]
    if stream.xff is not None:
        headers.append((b"x-forwarded-for", stream.xff))
    if stream.xfp is not None:
        headers.append((b"x-forwarded-proto", stream.xfp))
    if stream.request_id is not None:
        headers.append((b"x-request-id", stream.request_id))
    held = [piece for piece in stream.pending or () if piece and piece is not codec.LAST_CHUNK]
    # A request complete with nothing held ends with its HEADERS (H2Stream's rule 4).
    end = stream.request_complete and not held
    h2s = front.h2s = H2Stream(front, 1, split(headers), stream.start, end, stream.x)
    if stream.expect and not stream.request_complete and not stream.http10:  # RFC 9110 §10.1.1
        front.write(codec.CONTINUE_100)
    h2s.forward(cluster, authority)
    # Body bytes parsed before routing (a pipelined request) go first.
    for piece in held:
        front.request_body(piece)
    if stream.pending_size:
        conn.resume(PAUSE_PENDING_FULL)
    if stream.request_complete:
        front.request_end()
    return None


class Http1Downstream:
    __slots__ = (
        "chunked",
        "conn",
        "ctx",
        "finished",
        "h2s",
        "has_body",
        "head_only",
        "http10",
        "keep_alive",
        "loop",
        "original_dst",
        "peer_ip",
        "peer_label",
        "protocol",
        "request_complete",
        "response_complete",
        "response_started",
        "tls",
        "unacked",
        "upstream",
        "waiting",
        "write_paused",
    )

    xfcc = None  # the parser already added the verified client's XFCC to the headers
    headers_done = True
    started = True

    @property
    def transport(self) -> asyncio.BaseTransport:
        """The HTTP/1.1 connection's (what the access log reads the local address from)."""
        return self.conn.transport

    def __init__(self, stream: Stream) -> None:
        conn = stream.conn
        self.conn = conn
        self.ctx = stream.ctx
        self.loop = conn.loop
        self.peer_ip = conn.peer_ip
        self.original_dst = conn.original_dst
        self.peer_label = conn.peer_label
        self.tls = conn.tls
        self.http10 = stream.http10
        self.protocol = "HTTP/1.0" if stream.http10 else "HTTP/1.1"
        self.head_only = stream.method == b"HEAD"
        self.keep_alive = stream.keep_alive
        self.has_body = stream.has_body
        self.h2s: H2Stream = None  # type: ignore[assignment]  # set by relay_over_http2 right after construction
        self.upstream = self  # DownstreamConnection.pause_writing calls upstream.pause_reading
        self.request_complete = False
        self.response_started = False
        self.response_complete = False
        self.finished = False
        self.chunked = False
        self.write_paused = False
        self.waiting: Half | None = None
        self.unacked = 0

    @property
    def closed(self) -> bool:
        return self.conn.closed

    def write(self, data: bytes) -> None:
        if not self.conn.closed:
            self.conn.transport.write(data)

    # ================================================================== the Stream, to DownstreamConnection

    def request_body(self, data: bytes) -> None:
        if self.finished:
            return
        self.unacked += len(data)
        self.h2s.request_data(data, len(data))
        if self.unacked > self.conn.buffer_limit:
            self.conn.pause(PAUSE_UPSTREAM_FULL)

    def request_end(self) -> None:
        self.request_complete = True
        if not self.finished:
            self.h2s.request_end()

    def tunnel_data(self, data: bytes) -> None:
        pass  # no Upgrade is relayed to an HTTP/2 cluster (refused in relay_over_http2)

    def downstream_lost(self) -> None:
        self.h2s.downstream_reset(ErrorCodes.CANCEL)

    def local_reply(self, reply: LocalReply) -> None:
        self.h2s.local_reply(reply)

    def stream_share(self) -> int:
        return self.conn.buffer_limit  # one stream: all of it

    def response_sent(self, keepalive_closes: bool) -> None:
        """Nothing to do: the HTTP/1.1 head written in ``send_headers`` already said whether
        the connection stays open (draining, and the HTTP/1.1 stream's own keep-alive rules)."""

    def check_idle(self, now: float, limit: float) -> None:
        self.h2s.check_idle(now, limit)

    def pause_reading(self) -> None:
        self.write_paused = True

    def resume_reading(self) -> None:
        self.write_paused = False
        half, self.waiting = self.waiting, None
        if half is not None:
            self.pump(1, half)

    # ================================================================== the HTTP/2 downstream, to H2Stream

    def send_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        status = int(headers[0][1])
        parts = [codec.status_line(status)]
        framed = status in codec.NO_BODY_STATUS or status < 200 or self.head_only
        for name, value in headers[1:]:
            if name[0] != 0x3A:
                parts += (name, b": ", value, b"\r\n")
                if name == b"content-length":
                    framed = True
        if not framed:
            if end:
                parts.append(b"content-length: 0\r\n")
            elif self.http10:
                self.keep_alive = False  # close-delimited
            else:
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
        if (self.has_body and not self.request_complete) or self.conn.listener.draining:
            self.keep_alive = False  # the rest of the body would have to be read first
        parts += (codec.connection_header(self.keep_alive, self.http10), b"\r\n")
        self.response_started = True
        self.write(b"".join(parts))

    def pump(self, sid: int, half: Half) -> None:
        """Write the response DATA held in ``half`` while the client's socket takes it."""
        if half.done or self.conn.closed:
            return
        chunks = half.chunks
        while chunks:
            if self.write_paused:
                self.waiting = half
                return
            data, ack = chunks.popleft()
            if data and not self.head_only:
                self.write(codec.chunk(data) if self.chunked else data)
            if ack and half.ack is not None:
                half.ack(ack)
        if half.end:
            if self.chunked:
                self.write(codec.LAST_CHUNK)  # response trailers are not relayed over HTTP/1.1
            half.done = True
            self.response_complete = True
            half.on_done()

    def ack(self, sid: int, size: int) -> None:
        self.unacked -= size
        if self.unacked <= self.conn.buffer_limit:
            self.conn.resume(PAUSE_UPSTREAM_FULL)

    def reset(self, sid: int, code: int) -> bool:
        """The exchange ends early: a complete response ends the connection after it
        (NO_ERROR); a response cut short aborts it, which is how HTTP/1.1 says "truncated"."""
        if code == ErrorCodes.NO_ERROR:
            if self.has_body:
                self.keep_alive = False
        elif self.response_started and not self.response_complete:
            self.keep_alive = False
            self.conn.abort()
        return False

    def stream_finished(self, h2s: H2Stream) -> None:
        self.finished = True
        if self.has_body and not self.request_complete:
            self.keep_alive = False
        if not self.response_complete and self.response_started:
            self.keep_alive = False
            self.conn.abort()
        self.conn.stream_finished(self)  # type: ignore[arg-type]  # Http1Downstream stands in for the Stream
