"""The upstream side of an HTTP/1.1 exchange: one pooled connection to one host.

Owns a client connection to an upstream host: response parsing through httptools callbacks
that it hands to the bound stream, flow control back towards the downstream, 1xx handling,
the no-body cases llhttp cannot know by itself (responses to HEAD), the switch to a raw
tunnel after ``101 Switching Protocols``, and telling the pool when it is gone so a closed
connection is never handed to another request.

An upstream is not trusted to follow the protocol (issue 12, findings 1, 11, 15). Each rule
below closes the connection and answers 502 ``UPE`` (or cuts a response already begun):
1. A head (interim ones included) or a trailer block is bounded by the cluster's
   ``max_response_headers_kb`` in bytes and by ``max_headers_count`` in fields. Bytes are
   counted twice: per field as the parser hands it over (``head_bytes``, exact), and per read
   while a line is unfinished (``unparsed``: httptools buffers a header line whole before
   calling back, so at most one read past the limit is ever buffered).
2. A status outside 100-599 is refused; interim responses other than 101 are dropped.
3. ``101`` is accepted only for a request that asked to upgrade.
4. A byte after the complete response is unsolicited: the response still reaches its client,
   the connection never serves another request. The pool gets the connection back only after
   the whole read was parsed (``message_done``), so no other request is bound to it meanwhile.
5. ``Connection`` cannot make framing (``Content-Length``, ``Transfer-Encoding``) hop-by-hop.
"""

from __future__ import annotations

import asyncio
import select
from typing import TYPE_CHECKING

import httptools

from meshproxy.http import codec
from meshproxy.http.codec import HOP_BY_HOP, PAUSE_UPSTREAM_FULL

_SPECIAL_LENGTHS = frozenset(len(n) for n in (*HOP_BY_HOP, b"content-length"))
# Connection tokens that never name a field to remove (rule 5; RFC 9110 §7.6.1 allows a proxy
# to ignore a token naming framing, which this hop recomputes anyway).
_NOT_NAMED = frozenset({b"", b"close", b"keep-alive", b"content-length", b"transfer-encoding"})
_MIN_HEAD = len(b"HTTP/1.1 200\r\n\r\n")
_POLL_READABLE = select.POLLIN | select.POLLPRI | getattr(select, "POLLRDHUP", 0)
# Bytes a reason phrase may hold (HTAB, SP, VCHAR, obs-text): deleting them leaves the rest.
_REASON_OK = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])

if TYPE_CHECKING:
    from meshproxy.http.stream import Stream
    from meshproxy.upstream.breaker import ResourceManager
    from meshproxy.upstream.cluster import ClusterRuntime, Host


class _BadResponse(Exception):
    """Raised inside a parser callback: the response broke a rule (the message says which)."""


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, cluster: ClusterRuntime, host: Host, resources: ResourceManager) -> None:
        self.cluster = cluster
        self.host = host
        self.resources = resources  # the routing priority that opened it: its slot and its pool
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
        self.head_limit = cluster.config.max_response_headers_bytes
        self.max_headers = cluster.config.max_headers_count
        self.poller: select.poll | None = None  # this socket, registered once (is_reusable)
        self.unparsed = 0  # bytes fed since the last body progress: head, trailers, chunk sizes
        self.head_bytes = 0  # bytes of the heads (interim ones too) or of the trailer block
        self.header_count = 0  # fields in the current head or trailer block
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
        self.unparsed = self.head_bytes = 0
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
        self.unparsed += len(data)
        try:
            self.parser.feed_data(data)
            if self.unparsed > self.head_limit:
                raise _BadResponse(f"response head or trailers over {self.head_limit} bytes")
        except httptools.HttpParserUpgrade as exc:
            self.tunnel = True
            stream.start_tunnel(data[exc.args[0] :])
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            return self._refuse(stream, str(cause if isinstance(cause, _BadResponse) else exc))
        except _BadResponse as exc:
            return self._refuse(stream, str(exc))
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

    def on_message_begin(self) -> None:
        if self.message_done:
            raise _BadResponse("bytes after the complete response")
        self.header_count = 0
        self.head_bytes += _MIN_HEAD  # what an empty head costs: a flood of them is bounded too

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        self.head_bytes += len(name) + len(value) + 4
        if self.header_count > self.max_headers:
            raise _BadResponse(f"more than {self.max_headers} response header or trailer fields")
        if self.head_bytes > self.head_limit:
            raise _BadResponse(f"response head or trailers over {self.head_limit} bytes")
        stream = self.stream
        if stream is None or stream.response_started:
            return  # trailers of a chunked response: not relayed over HTTP/1.1
        # Only names as long as a hop-by-hop one or content-length need a closer look; every
        # other header becomes its output line at once, its name's case kept as received.
        if len(name) in _SPECIAL_LENGTHS:
            lname = name.lower()
            if lname in HOP_BY_HOP:
                if lname == b"transfer-encoding":
                    # RFC 9112 §6.1: chunked, once and last, is all the proxy decodes; another
                    # coding would reach the client still applied, undeclared (found by the fuzzer).
                    if stream.resp_chunk_down or value.strip(b" \t").lower() != b"chunked":
                        raise _BadResponse("a transfer coding other than chunked, or chunked twice")
                    stream.resp_chunk_down = True
                elif lname == b"connection":
                    named = [t.strip().lower() for t in value.split(b",")]
                    self.connection_named.extend(t for t in named if t not in _NOT_NAMED)
                return
            if lname == b"content-length":
                stream.resp_content_length = True
        stream.resp_lines.append(name + b": " + value + b"\r\n")

    def on_status(self, reason: bytes) -> None:
        # RFC 9112 §4: reason-phrase = *( HTAB / SP / VCHAR / obs-text ); llhttp lets other
        # control bytes (NUL among them) through. The proxy writes its own status line, so this
        # is strictness towards a broken upstream, not framing: 502 UPE like any malformed head.
        if reason.translate(None, _REASON_OK):
            raise _BadResponse("a control byte in the status line's reason phrase")

    def on_headers_complete(self) -> None:
        stream = self.stream
        if stream is None:
            return
        status = self.parser.get_status_code()
        if not 100 <= status <= 599:
            raise _BadResponse(f"status {status} is outside 100-599")
        if status == 101 and stream.upgrade is None:
            raise _BadResponse("101 Switching Protocols to a request that asked for no upgrade")
        version = self.parser.get_http_version()
        if version not in ("1.1", "1.0"):  # llhttp reads any digit.digit (found by the fuzzer)
            raise _BadResponse(f"HTTP/{version} is not an HTTP/1.x response")
        if stream.resp_chunk_down and version == "1.0":
            # RFC 9112 §6.1: faulty framing, found by the http1_response fuzzer.
            raise _BadResponse("Transfer-Encoding in an HTTP/1.0 response")
        if self.connection_named:
            # RFC 9110 §7.6.1: the fields a Connection header names are hop-by-hop too.
            named = self.connection_named
            kept = [h for h in codec.header_lines(b"".join(stream.resp_lines)) if h[0] not in named]
            stream.resp_lines = [codec.join_lines(kept)]
            self.connection_named = []
        if 100 <= status < 200 and status != 101:
            if stream.resp_content_length or stream.resp_chunk_down:
                # RFC 9110 §8.6, RFC 9112 §6.1: never on a 1xx, which ends at its empty line; llhttp
                # read a body for it, relayed headless to the client (found by the fuzzer).
                raise _BadResponse(f"interim {status} response with Content-Length or Transfer-Encoding")
            # An interim response (100, 103): dropped; the final one follows.
            stream.resp_lines.clear()
            stream.resp_content_length = False
            stream.resp_chunk_down = False
            return
        self.unparsed = self.head_bytes = 0  # the head is parsed: the counts cover trailers now
        self.header_count = 0
        stream.response_headers(status, self.parser.should_keep_alive())
        if self.stream is not stream:
            return  # the stream let go of this connection (a retry): the rest is discarded
        if stream.method == b"HEAD" and status != 101:
            # llhttp cannot know a HEAD response has no body: end it here, parse afresh next time.
            self.fresh_parser_needed = True
            self.reusable_after_response = self.parser.should_keep_alive()
            self.message_done = True

    def on_body(self, body: bytes) -> None:
        if self.message_done:
            raise _BadResponse("a body after the response to HEAD")
        self.unparsed -= len(body)
        stream = self.stream
        if stream is not None:
            stream.response_body(body)

    def on_chunk_header(self) -> None:
        self.unparsed = 0  # a chunk's size line: what follows is its data, or the trailers

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
