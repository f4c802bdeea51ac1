"""HTTP/2 → HTTP/1.1: one HTTP/2 stream relayed over a pooled HTTP/1.1 upstream connection.

Owns ``Http1Upstream``, the adapter for a route whose cluster speaks HTTP/1.1. To
``H2Stream`` it is the pool and the upstream connection it already talks to (``request``,
``cancel``, ``open_stream``, ``pump``, ``stream_closed``); to ``http.upstream.
UpstreamConnection`` it is the ``Stream`` that connection already feeds (``resp_lines``,
``response_headers``, ``response_body``, ``response_end``, ``upstream_lost``, ``conn.pause``).
One exists per attempt. The translation (Envoy's codec behaviour): pseudo-headers become the
request line and Host, ``te`` and other connection-specific fields are dropped, the body is
framed by the client's content-length or else chunked, request trailers are dropped; the
response status and headers become one HEADERS frame, its body DATA, chunked trailers dropped.

Flow control: request DATA is acknowledged to the client as it is written to the upstream
socket, and stops while that socket's buffer is full (``pause``); response bytes pause the
upstream socket's reading while more than the stream's share of buffer waits unacknowledged
downstream: the cluster's buffer limit, but no more than an equal share of the listener's
``per_connection_buffer_limit_bytes`` among the downstream connection's streams (never under
``MIN_SHARE``). One client that does not read could otherwise make the proxy hold
``max_concurrent_streams`` times the cluster's limit; a budget shared across the streams instead
would let one stalled stream stop all the others (head-of-line blocking), which a share does not.
Must not know about routing or retries: ``H2Stream`` decides those.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

from meshproxy.hcm.context import OVERFLOW_PENDING, LocalReply
from meshproxy.http import codec
from meshproxy.http.upstream import UpstreamConnection, close_orphan, connect_result
from meshproxy.upstream.cluster import connect_failure

if TYPE_CHECKING:
    from asyncio import Task

    from meshproxy.http2.connection import Half
    from meshproxy.http2.stream import H2Stream
    from meshproxy.upstream.breaker import ResourceManager
    from meshproxy.upstream.cluster import ClusterRuntime, Host

# Request fields HTTP/1.1 must not carry from HTTP/2 (RFC 9113 §8.2.2), or that we frame.
_REQUEST_DROP = frozenset({b"te", b"content-length", b"transfer-encoding", b"connection"})
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
# The least response buffer a stream's share may come to (about one socket read; h2's default
# stream window is 64 KiB too).
MIN_SHARE = 64 * 1024


class Http1Upstream:
    __slots__ = (
        "chunked",
        "cluster",
        "conn",
        "connect_task",
        "h2s",
        "host",
        "method",
        "paused",
        "request_complete",
        "resp_chunk_down",
        "resp_close_delimited",
        "resp_content_length",
        "resp_lines",
        "response_complete",
        "response_started",
        "status",
        "unacked",
        "upstream",
        "waiting",
    )
    # An HTTP/2 request never asks to upgrade: UpstreamConnection refuses a 101 with 502 UPE.
    upgrade = None

    def __init__(self, cluster: ClusterRuntime, host: Host) -> None:
        self.cluster = cluster
        self.host = host
        self.conn = self  # UpstreamConnection pauses "stream.conn" when its socket is full
        self.h2s: H2Stream | None = None
        self.upstream: UpstreamConnection | None = None
        self.connect_task: Task[UpstreamConnection] | None = None
        self.method = b""
        self.chunked = False
        self.paused = False
        self.waiting: Half | None = None
        self.unacked = 0
        self.status = 0
        self.resp_lines: list[bytes] = []
        self.resp_content_length = False
        self.resp_chunk_down = False
        self.resp_close_delimited = False
        self.request_complete = False
        self.response_started = False
        self.response_complete = False

    # ================================================================== pool, to H2Stream

    def request(self, h2s: H2Stream) -> None:
        self.h2s = h2s
        cluster = self.cluster
        rm = h2s.x.resources
        upstream = cluster.acquire(self.host, rm)
        if upstream is not None:
            return self.take(upstream)  # type: ignore[arg-type]  # HTTP/1.1 clusters pool UpstreamConnections
        if not cluster.can_connect(rm):
            if not cluster.enqueue(self):
                h2s.local_reply(OVERFLOW_PENDING)
            return None
        return self.connect()

    def connect(self) -> None:
        cluster, host = self.cluster, self.host
        rm = self.resources or cluster.breakers.default
        task = cluster.open_connection(host, lambda: UpstreamConnection(cluster, host, rm), rm)
        self.connect_task = task
        task.add_done_callback(self._connected)

    def _connected(self, task: Task[UpstreamConnection]) -> None:
        self.connect_task = None
        result = connect_result(task)
        h2s = self.h2s
        if isinstance(result, BaseException):
            if h2s is not None:
                h2s.upstream_failed(connect_failure(result).encode())
        elif result is not None and h2s is None:
            result.close()
        elif result is not None:
            self.take(result)

    @property
    def resources(self) -> ResourceManager | None:
        """The breakers of the stream's routing priority (the cluster's pending queue asks)."""
        return self.h2s.x.resources if self.h2s is not None else None

    def take(self, upstream: UpstreamConnection) -> None:
        """A connection for this exchange (from the pool, a connect, or a freed one)."""
        self.upstream = upstream
        upstream.bind(self)  # type: ignore[arg-type]  # Http1Upstream stands in for the Stream the connection feeds
        self.h2s.attach(self)  # type: ignore[union-attr, arg-type]  # Http1Upstream stands in for an H2Upstream; h2s set by request()

    def cancel(self, h2s: H2Stream) -> None:
        self.cluster.dequeue(self)  # while h2s still names the queue entry's priority
        self.h2s = None
        task = self.connect_task
        if task is not None:
            self.connect_task = None
            task.remove_done_callback(self._connected)
            task.add_done_callback(close_orphan)

    # ================================================================== upstream, to H2Stream

    def open_stream(self, h2s: H2Stream, headers: list[tuple[bytes, bytes]], end: bool) -> int:
        h2s.down.ack = self._acked
        method = target = authority = b""
        length: bytes | None = None
        parts: list[bytes] = []
        for name, value in headers:
            if name[0] == 0x3A:
                if name == b":method":
                    method = value
                elif name == b":path":
                    target = value
                elif name == b":authority":
                    authority = value
            elif name not in _REQUEST_DROP:
                parts += (name, b": ", value, b"\r\n")
            elif name == b"content-length":
                length = value
        self.method = method
        if length is not None:
            parts += (b"content-length: ", length, b"\r\n")
        elif not end:
            self.chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        elif method in _BODY_METHODS:
            parts.append(b"content-length: 0\r\n")
        self.request_complete = end
        head = b"".join((method, b" ", target, b" HTTP/1.1\r\nhost: ", authority, b"\r\n", *parts, b"\r\n"))
        self.upstream.transport.write(head)  # type: ignore[union-attr]  # open_stream follows take(): the connection is bound
        return 1

    def pump(self, sid: int, half: Half) -> None:
        """Write the request DATA held in ``half`` while the upstream socket takes it."""
        upstream = self.upstream
        if half.done or upstream is None or upstream.closed:
            return
        if self.paused:
            self.waiting = half
            return
        chunks = half.chunks
        write = upstream.transport.write
        while chunks and not self.paused:
            data, ack = chunks.popleft()
            if data:
                write(codec.chunk(data) if self.chunked else data)
            if ack and half.ack is not None:
                half.ack(ack)
        if chunks:
            self.waiting = half
            return
        if half.end:
            if self.chunked:
                write(codec.LAST_CHUNK)  # request trailers are not relayed over HTTP/1.1
            half.done = True
            self.request_complete = True
            half.on_done()

    def pause(self, reason: int) -> None:
        self.paused = True

    def resume(self, reason: int) -> None:
        self.paused = False
        half, self.waiting = self.waiting, None
        if half is not None:
            self.pump(1, half)

    def stream_closed(self, sid: int, code: int) -> bool:
        """The stream is done with this exchange: pool the connection if it ended cleanly."""
        h2s, self.h2s = self.h2s, None
        upstream, self.upstream = self.upstream, None
        if upstream is None:
            return False
        upstream.unbind()
        if self.request_complete and self.response_complete and upstream.reusable_after_response:
            self.cluster.release(upstream, h2s.conn.loop.time() if h2s is not None else 0.0)
            return False
        upstream.close()
        return not self.response_complete

    def _share(self) -> int:
        """How much of the response may wait unacknowledged downstream (O(1))."""
        h2s = self.h2s
        limit = self.cluster.config.buffer_limit
        if h2s is None:
            return limit
        return min(limit, max(h2s.conn.stream_share(), MIN_SHARE))

    def _acked(self, size: int) -> None:
        self.unacked -= size
        upstream = self.upstream
        if upstream is not None and upstream.reading_paused and self.unacked <= self._share():
            upstream.resume_reading()

    # ================================================================== the Stream, to UpstreamConnection

    def response_headers(self, status: int, upstream_keep_alive: bool) -> None:
        h2s = self.h2s
        if h2s is None:
            return
        self.status = status
        self.response_started = True
        no_body = status in codec.NO_BODY_STATUS or self.method == b"HEAD"
        if (
            not upstream_keep_alive
            and not self.resp_content_length
            and not self.resp_chunk_down
            and not no_body
        ):
            self.resp_close_delimited = True
        headers = [(b":status", b"%d" % status)]
        headers += codec.header_lines(b"".join(self.resp_lines))
        h2s.response_headers(headers)

    def response_body(self, data: bytes) -> None:
        h2s = self.h2s
        if h2s is None:
            return
        self.unacked += len(data)
        h2s.response_data(data, len(data))
        upstream = self.upstream
        if upstream is not None and self.unacked > self._share():
            upstream.pause_reading()

    def response_end(self) -> None:
        self.response_complete = True
        if self.h2s is not None:
            self.h2s.response_end()

    def flush(self) -> None:
        pass  # H2Stream's downstream coalesces its own writes

    def upstream_lost(self, exc: Exception | None) -> None:
        h2s, self.upstream = self.h2s, None
        if h2s is None or self.response_complete:
            return
        if self.response_started and self.resp_close_delimited:
            return self.response_end()
        h2s.upstream_reset(
            ErrorCodes.INTERNAL_ERROR, b"upstream connect error or disconnect/reset before headers"
        )

    def upstream_protocol_error(self, reason: str) -> None:
        if self.h2s is not None:
            self.h2s.local_reply(LocalReply(502, b"upstream protocol error: " + reason.encode(), "UPE"))
