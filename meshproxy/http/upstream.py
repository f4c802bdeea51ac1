"""The upstream side of an HTTP/1.1 exchange: one pooled connection to one host.

Owns a client connection to an upstream host: handing the bound stream what the response
parser (``parser.ResponseParser``, compiled; its rules are in ``_h1_response_py.py``) frames,
flow control back towards the downstream, the switch to a raw tunnel after ``101 Switching
Protocols``, and telling the pool when it is gone so a closed connection is never handed to
another request.

An upstream is not trusted to follow the protocol (issue 12, findings 1, 11, 15). Each rule
below closes the connection and answers 502 ``UPE`` (or cuts a response already begun); the
parser keeps the first three, where the RFC's:
1. A head (interim ones included) or a trailer block is bounded by the cluster's
   ``max_response_headers_kb`` in bytes and by ``max_headers_count`` in fields, exactly.
2. A status outside 100-599 is refused; interim responses other than 101 are dropped.
3. ``Connection`` cannot make framing (``Content-Length``, ``Transfer-Encoding``) hop-by-hop.
4. ``101`` is accepted only for a request that asked to upgrade.
5. A byte after the complete response is unsolicited: the response still reaches its client,
   the connection never serves another request. The pool gets the connection back only after
   the whole read was parsed (``message_done``), so no other request is bound to it meanwhile.
"""

from __future__ import annotations

import asyncio
import select
from typing import TYPE_CHECKING

from meshproxy.http.codec import PAUSE_UPSTREAM_FULL
from meshproxy.http.errors import MessageRefused
from meshproxy.http.parser import ResponseParser

_POLL_READABLE = select.POLLIN | select.POLLPRI | getattr(select, "POLLRDHUP", 0)

if TYPE_CHECKING:
    from meshproxy.http.parser import ResponseHead
    from meshproxy.http.stream import Stream
    from meshproxy.upstream.breaker import ResourceManager
    from meshproxy.upstream.cluster import ClusterRuntime, Host


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, cluster: ClusterRuntime, host: Host, resources: ResourceManager) -> None:
        self.cluster = cluster
        self.host = host
        self.resources = resources  # the routing priority that opened it: its slot and its pool
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made, before any use
        config = cluster.config
        self.parser = ResponseParser(self, config.max_response_headers_bytes, config.max_headers_count)
        self.stream: Stream | None = None
        self.idle_since = 0.0
        self.requests = 0
        self.closed = False
        self.tunnel = False
        self.reading_paused = False
        self.reusable_after_response = False
        self.keep_alive = False  # the response's own say (HTTP version, Connection)
        self.held: list[bytes] | None = None  # tunnel bytes waiting for the 101
        self.poller: select.poll | None = None  # this socket, registered once (is_reusable)
        self.message_done = False  # the response completed inside the read being parsed

    # ------------------------------------------------------------------ pool interface

    def is_reusable(self) -> bool:
        """May the pool hand this idle connection out? A host that closed it (or sent stray
        bytes) a moment ago may not have been heard yet: a zero-timeout poll of the socket sees
        a FIN already in the kernel, so no request goes out on a connection known to be dead,
        the one case where a request provably was not sent (issue 12, finding 14)."""
        if self.closed or self.transport.is_closing():
            return False
        poller = self.poller
        if poller is not None and poller.poll(0):
            self.cluster.stats.upstream_rq_retry_reused += 1
            return False
        return True

    def bind(self, stream: Stream) -> None:
        self.stream = stream
        self.requests += 1
        self.reusable_after_response = False
        self.parser.reset(stream.method == b"HEAD")

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
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.poller = select.poll()
            self.poller.register(sock.fileno(), _POLL_READABLE)
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
            rest = self.parser.feed(data)
        except MessageRefused as exc:
            return self._refuse(stream, exc.body.decode("latin-1"))
        if rest is not None:
            self.tunnel = True
            stream.start_tunnel(rest)
            return
        if self.message_done:
            self.message_done = False
            stream.response_end()  # only now may the connection go back to the pool (rule 4)
        elif self.stream is stream:
            stream.flush()

    def _refuse(self, stream: Stream, reason: str) -> None:
        """The host broke the protocol: this connection can never be trusted again."""
        self.close()
        self.cluster.stats.upstream_cx_protocol_error += 1
        if self.stream is not stream:
            return  # the stream let go of this connection (a retry): nothing to answer
        if self.message_done:
            # Stray bytes after a complete response: the response itself stands (rule 4).
            self.message_done = False
            self.reusable_after_response = False
            return stream.response_end()
        stream.upstream_protocol_error(reason or "malformed response")

    def eof_received(self) -> bool | None:
        stream = self.stream
        if self.tunnel and stream is not None:
            return stream.tunnel_eof(upstream=True)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.host.cx_active -= 1
        stats = self.cluster.stats
        stats.upstream_cx_active -= 1
        self.cluster.connection_closed(self.resources)
        stream = self.stream
        if stream is None:
            stats.upstream_cx_destroy_remote += 1
            self.cluster.forget(self)
            return
        self.stream = None
        stream.upstream_lost(exc)

    def pause_writing(self) -> None:
        stream = self.stream
        if stream is not None:
            stream.conn.pause(PAUSE_UPSTREAM_FULL)

    def resume_writing(self) -> None:
        stream = self.stream
        if stream is not None:
            stream.conn.resume(PAUSE_UPSTREAM_FULL)

    # ------------------------------------------------------------------ parser callbacks

    def on_head(self, head: ResponseHead) -> None:
        stream = self.stream
        if stream is None:
            return
        status = head.status
        if status == 101 and stream.upgrade is None:
            raise MessageRefused(502, b"101 Switching Protocols to a request that asked for no upgrade")
        self.keep_alive = head.keep_alive
        lines = head.lines
        stream.resp_lines = [lines] if lines else []
        stream.resp_content_length = head.content_length >= 0
        stream.resp_chunk_down = head.chunked
        stream.response_headers(status, head.keep_alive)

    def on_body(self, body: bytes) -> None:
        stream = self.stream
        if stream is not None:
            stream.response_body(body)

    def on_message_complete(self) -> None:
        stream = self.stream
        if stream is None or stream.response_complete:
            return
        self.reusable_after_response = (
            self.keep_alive
            and stream.request_complete
            and (
                self.cluster.config.max_requests_per_connection == 0
                or self.requests < self.cluster.config.max_requests_per_connection
            )
        )
        self.message_done = True


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
