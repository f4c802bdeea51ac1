"""The downstream side of an HTTP/1.1 connection: bytes from a client in, streams out.

Owns one accepted connection running the http_connection_manager filter: request framing by
``parser.RequestParser`` (our RFC 9112 parser, compiled; its rules are in ``_h1_py.py``), the
request-smuggling defences above it, keep-alive and pipelining (requests are
answered in order; a pipelined request waits, its bytes bounded by one read while reading is
paused), flow control towards the upstream, and the connection's timeouts (kept by the
listener's sweep: request head and request timeouts, keep-alive idle, max connection duration).
Per-request work lives in ``stream.py``.

The request-side defences, each with its reason (1 to 4 are the parser's, where the RFC's):
1. The head (request line and fields) and the trailer section are each bounded by
   ``max_request_headers_kb`` and ``max_headers_count`` (431 and close), exactly: an
   incomplete head, chunk-size line or trailer section is cut at the limit.
2. Framing fields are never hop-by-hop: a ``Connection`` token naming ``Content-Length``,
   ``Transfer-Encoding``, ``Host`` or ``Upgrade`` is ignored (codec.NEVER_HOP_BY_HOP).
3. ``Transfer-Encoding`` is the list of every line: anything but a lone ``chunked`` is refused
   (501 when ``chunked`` is last, 400 otherwise); this hop re-frames the body.
4. ``Host`` and absolute-form authorities follow RFC 3986 (no userinfo); a target with a
   fragment is refused (Envoy's ``http.reject_path_with_fragment``); only HTTP/1.0 and 1.1
   are spoken; every request line has single spaces between its parts.
5. Upgrades: ``h2c`` is never tunnelled (as Envoy, its headers are removed and the request goes
   on as plain HTTP/1.1), nor is a request with a body; parsing goes on after such a request.
   Any other upgrade is tunnelled only when ``upgrade_configs`` enable it (``hcm/upgrade.py``,
   asked by the stream once routed): else 403 and the connection closes.
   ``100 Continue`` is sent only for a request that has a body.
6. ``headers_with_underscores_action``: ALLOW, REJECT_REQUEST (400 and close), DROP_HEADER.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import monotonic
from typing import TYPE_CHECKING

from meshproxy.hcm.context import LocalReply
from meshproxy.hcm.identity import downstream_peer
from meshproxy.http import codec
from meshproxy.http.codec import PAUSE_PIPELINE, PAUSE_WRITE_FULL
from meshproxy.http.errors import MessageRefused
from meshproxy.http.parser import RequestParser
from meshproxy.http.stream import Stream

if TYPE_CHECKING:
    from collections.abc import Callable

    from meshproxy.hcm.context import HttpContext
    from meshproxy.http.parser import RequestHead
    from meshproxy.overload.config import TimerType
    from meshproxy.tls.engine import Negotiated

log = logging.getLogger("meshproxy.http")

# Bytes parsed at a time: bounds how many pipelined requests one read can queue.
FEED_SLICE = 8 * 1024


class DownstreamConnection(asyncio.Protocol):
    def __init__(self, ctx: HttpContext, original_dst: tuple[str, int] | None = None) -> None:
        self.ctx = ctx
        self.listener = ctx.listener
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made, before any use
        config = ctx.config
        self.underscores = (
            None if config.headers_with_underscores == "ALLOW" else config.headers_with_underscores
        )
        self.parser = RequestParser(
            self,
            config.max_request_headers_bytes,
            config.max_headers_count,
            self.underscores == "DROP_HEADER",
        )
        self.buffer_limit = ctx.listener.config.buffer_limit
        self.parsing: Stream | None = None  # the stream whose request is being parsed
        self.active: Stream | None = None  # the stream being answered
        self.queue: deque[Stream] = deque()  # pipelined requests waiting their turn
        self.backlog: bytes | None = None  # read but not parsed while requests are queued
        self.expired = False  # max_connection_duration passed: no further keep-alive
        self.paused = 0
        self.closed = False
        self.upgraded = False
        # The request whose Upgrade this hop tunnels: every byte after its head is its tunnel's,
        # held until its 101 even while it waits behind an earlier pipelined request.
        self.tunnel_stream: Stream | None = None
        self.idle_since = self.born = self.loop.time()
        self.peer_ip = b""
        self.original_dst = original_dst  # restored by the listener's original_dst filter
        self.peer_label = ""
        self.error: tuple[int, bytes] | None = None
        self.tls: Negotiated | None = None
        self.xfcc: bytes | None = None  # x-forwarded-client-cert for a verified client
        self.eof = False

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # asyncio passes a BaseTransport; stream transports are Transports
        transport.set_write_buffer_limits(high=self.buffer_limit)  # type: ignore[attr-defined]  # a Transport method; connection_made is typed with BaseTransport
        self.peer_ip, self.peer_label, self.tls, self.xfcc = downstream_peer(self.ctx, transport)
        self.listener.connection_opened(self)

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            stream = self.tunnel_stream  # None after a refusal: nothing more is read as anything
            if stream is not None:
                stream.tunnel_data(data)
            return
        if self.backlog is not None:  # a read that was in flight when reading paused
            self.backlog += data
            return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """Feed ``data`` to the parser a slice at a time: once a request waits behind another
        (pipelining), the rest of the read is kept unparsed until the queue drains, so one read
        of small pipelined requests never becomes thousands of streams at once."""
        for start in range(0, len(data), FEED_SLICE):
            if self.queue:
                self.backlog = data[start:]
                return
            end = start + FEED_SLICE
            if not self._feed(data[start:end]):
                rest = data[end:]
                stream = self.tunnel_stream
                if rest and stream is not None:
                    stream.tunnel_data(rest)  # an upgrade: the rest of the read is the tunnel's
                return

    def _feed(self, data: bytes) -> bool:
        """One slice through the parser; False once this connection parses no more (refused, or
        switched to a tunnel: the tunnel then got the rest of the read, held until its 101)."""
        try:
            rest = self.parser.feed(data)
        except MessageRefused as exc:
            self._reject(exc.status, exc.body)
            return False
        except Exception:
            # A bug of ours inside a callback: say so loudly, answer 500, close.
            log.error("internal error while handling a request from %s", self.peer_label, exc_info=True)
            self._reject(500, b"internal error")
            return False
        if rest is None:
            return not self.upgraded
        self.upgraded = True
        stream = self.tunnel_stream
        if rest and stream is not None:
            stream.tunnel_data(rest)
        return False

    def _parse_backlog(self) -> None:
        data, self.backlog = self.backlog, None
        if data is not None and not self.closed and not self.upgraded:
            self._parse(data)
        if not self.queue and self.backlog is None:
            self.resume(PAUSE_PIPELINE)

    def eof_received(self) -> bool | None:
        # A half-closed client may still wait for a response to a complete request (RFC 9112
        # §9.6); a request cut off by the EOF will never complete, so the connection closes.
        self.eof = True
        stream = self.active
        if stream is not None and stream.tunnel:
            return stream.tunnel_eof(upstream=False)
        if stream is not None and stream.request_complete and self.parsing is None:
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.listener.connection_closed(self)
        for stream in (self.active, *self.queue):
            if stream is not None:
                stream.downstream_lost()
        self.active = None
        self.queue.clear()

    def pause_writing(self) -> None:
        # Over per_connection_buffer_limit_bytes: read neither the upstream (its response waits
        # in the kernel) nor the client (pipelined requests would queue responses here).
        self.pause(PAUSE_WRITE_FULL)
        stream = self.active
        if stream is not None and stream.upstream is not None:
            stream.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.resume(PAUSE_WRITE_FULL)
        stream = self.active
        if stream is None:
            if self.queue:  # a pipelined request held back while the client was not reading
                self._next()
        elif stream.upstream is not None:
            stream.upstream.resume_reading()

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        stream = Stream(self, monotonic())
        self.parsing = stream
        if self.active is None:
            self.active = stream
        else:
            self.queue.append(stream)
            self.pause(PAUSE_PIPELINE)

    def on_head(self, head: RequestHead) -> bool:
        """The parsed head: the stream takes it over; returns whether the bytes after it are an
        upgrade's tunnel (rule 5), which the parser then leaves to this connection."""
        stream = self.parsing
        assert stream is not None
        if head.underscores and self.underscores is not None:  # rule 6
            stats = self.ctx.stats
            if self.underscores == "REJECT_REQUEST":
                stats.requests_rejected_with_underscores_in_headers += 1
                raise MessageRefused(400, b"bad request: header name with underscores")
            stats.dropped_headers_with_underscores += head.underscores
        stream.headers_done = True
        stream.method = head.method
        stream.url = head.target
        stream.http10 = head.http10
        stream.headers = headers = head.headers
        stream.authority = head.authority
        stream.request_id = head.request_id
        stream.xff = head.xff
        stream.xfp = head.xfp
        stream.chunked = head.chunked
        stream.has_body = has_body = head.has_body
        stream.expect = head.expect and has_body  # RFC 9110 §10.1.1: nothing to continue with
        stream.keep_alive = head.keep_alive and not self.expired
        if self.xfcc is not None:
            # The verified peer, as a header, before routing: route header matchers can select
            # on the caller's SPIFFE ID (e.g. a "contains URI=spiffe://…" string match).
            headers.append((b"x-forwarded-client-cert", self.xfcc))
        upgrading = head.upgrading  # an Upgrade request, or CONNECT
        upgrade = head.upgrade if upgrading else None
        if upgrade is not None and (has_body or b"h2c" in upgrade.lower()):
            # Rule 5: sent on as a plain request, its body framed as any other.
            if stream.chunked:
                raise MessageRefused(400, b"bad request: upgrade request with a chunked body")
            upgrade = None
            upgrading = False
        stream.upgrade = upgrade
        if upgrading:
            self.tunnel_stream = stream
        if stream is self.active:
            stream.begin()
        return upgrading

    def on_body(self, body: bytes) -> None:
        stream = self.parsing
        assert stream is not None
        stream.request_body(body)

    def on_message_complete(self) -> None:
        stream = self.parsing
        assert stream is not None
        self.parsing = None
        stream.request_end()

    # ------------------------------------------------------------------ stream hand-off

    def stream_finished(self, stream: Stream) -> None:
        if stream is not self.active:
            return
        self.active = None
        if self.closed:
            return
        if not stream.keep_alive or self.listener.draining or self.eof:
            if self.parsing is not None and self.parsing is not stream and not self.parsing.started:
                self.parsing = None
            self.close()
            return
        if self.error is not None:
            status, body = self.error
            self.transport.write(codec.local_reply(status, body, close=True))
            self.close()
            return
        self.idle_since = self.loop.time()
        if self.queue and not self.paused & PAUSE_WRITE_FULL:  # else resume_writing starts it
            self._next()

    def _next(self) -> None:
        """The first pipelined request is answered now; once none waits, parsing goes on."""
        nxt = self.queue.popleft()
        self.active = nxt
        if not self.queue:
            if self.backlog is not None:
                self.loop.call_soon(self._parse_backlog)  # not from inside a parser callback
            else:
                self.resume(PAUSE_PIPELINE)
        if nxt.headers_done:
            nxt.begin()

    # ------------------------------------------------------------------ errors, flow, close

    def _reject(self, status: int, body: bytes, flags: str = "DPE") -> None:
        """Answer a request that cannot be parsed, then close (the byte stream is untrusted now)."""
        stats = self.ctx.stats
        if status == 431:
            stats.downstream_rq_431 += 1
        elif status == 400:
            stats.downstream_cx_protocol_error += 1
        self.upgraded = True  # stop parsing anything else on this connection
        self.tunnel_stream = None  # ... or relaying it anywhere
        stream = self.parsing
        if stream is not None and stream is self.active and not stream.response_started:
            stream.keep_alive = False
            if not stream.started:
                stream.open()
            stream.local_reply(LocalReply(status, body, flags))
            self.close()
        elif self.active is None:
            self.transport.write(codec.local_reply(status, body, close=True))
            self.close()
        else:
            # A pipelined request is bad while an earlier one is still being answered.
            self.error = (status, body)
            self.pause(PAUSE_PIPELINE)

    def pause(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        """Close after what was written is flushed."""
        if not self.closed:
            self.transport.close()

    def abort(self) -> None:
        """Close now: a response was cut short and the client must see the connection end."""
        if not self.closed:
            self.transport.abort()

    def is_idle(self) -> bool:
        return self.active is None and self.parsing is None and not self.queue

    # ------------------------------------------------------------------ timeouts

    def sweep(self, now: float, request_now: float, scale: Callable[[TimerType, float], float]) -> None:
        """The listener's sweep (about once a second) keeps this connection's timeouts: ``now``
        is loop time (the idle clocks), ``request_now`` the request path's clock; ``scale`` is
        the overload manager's ``reduce_timeouts`` (the identity unless it is active)."""
        cfg = self.ctx.config
        if (
            cfg.max_connection_duration > 0
            and not self.expired
            and now - self.born > scale("HTTP_DOWNSTREAM_CONNECTION_MAX", cfg.max_connection_duration)
        ):
            # Envoy: HTTP/1.1 has no GOAWAY; the next response says "connection: close".
            self.expired = True
            self.ctx.stats.downstream_cx_max_duration_reached += 1
            for stream in (self.active, *self.queue):
                if stream is not None:
                    stream.keep_alive = False
        stream = self.active
        if stream is None:
            idle = scale("HTTP_DOWNSTREAM_CONNECTION_IDLE", cfg.idle_timeout)
            if self.is_idle() and (self.expired or 0 < idle < now - self.idle_since):
                self.close()
        elif not stream.headers_done:
            self._head_timeouts(stream, request_now, cfg.request_headers_timeout, cfg.request_timeout)
        elif cfg.stream_idle_timeout > 0:
            stream.check_idle(request_now, cfg.stream_idle_timeout)  # the exchange scales it

    def _head_timeouts(self, stream: Stream, now: float, head_limit: float, request_limit: float) -> None:
        """request_headers_timeout and request_timeout from the request's first byte, while its
        head is incomplete (after that, request_timeout is the exchange's deadline): 408, close."""
        elapsed = now - stream.start
        if 0 < head_limit < elapsed:
            self.ctx.stats.downstream_rq_header_timeout += 1
            self._reject(408, b"request header timeout", "-")
        elif 0 < request_limit < elapsed:
            self.ctx.stats.downstream_rq_timeout += 1
            self._reject(408, b"request timeout", "-")
