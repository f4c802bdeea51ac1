"""The downstream side of an HTTP/1.1 connection: bytes from a client in, streams out.

Owns one accepted connection running the http_connection_manager filter: llhttp parsing via
httptools callbacks, request-smuggling defences (llhttp's strict mode rejects conflicting
Content-Length/Transfer-Encoding, bad chunk sizes and obs-fold; we bound the header block),
keep-alive and pipelining (requests are answered in order; a pipelined request waits, its
bytes bounded by one read while reading is paused), flow control towards the upstream, and
idle/drain handling. Per-request work lives in ``stream.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import monotonic
from typing import TYPE_CHECKING

import httptools

from meshproxy.hcm.context import LocalReply
from meshproxy.hcm.identity import downstream_peer
from meshproxy.http import codec
from meshproxy.http.codec import PAUSE_PIPELINE
from meshproxy.http.stream import Stream

if TYPE_CHECKING:
    from meshproxy.hcm.context import HttpContext
    from meshproxy.tls.engine import Negotiated

log = logging.getLogger("meshproxy.http")

# Request headers the stream handles itself instead of relaying as they are.
_HOST, _CONNECTION, _HOP, _TE, _UPGRADE, _EXPECT, _XRID, _XFF, _XFP, _CL = range(10)
_SPECIAL = {
    b"host": _HOST,
    b"connection": _CONNECTION,
    b"keep-alive": _HOP,
    b"proxy-connection": _HOP,
    b"te": _HOP,
    b"trailer": _HOP,
    b"transfer-encoding": _TE,
    b"upgrade": _UPGRADE,
    b"expect": _EXPECT,
    b"x-request-id": _XRID,
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFP,
    b"content-length": _CL,
    # Envoy's SANITIZE(_SET): a client's own XFCC is never trusted; ours is added under mTLS.
    b"x-forwarded-client-cert": _HOP,
}


class _HeaderTooLarge(Exception):
    pass


class _UnsupportedCoding(Exception):
    pass


class DownstreamConnection(asyncio.Protocol):
    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx
        self.listener = ctx.listener
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made, before any use
        self.parser = httptools.HttpRequestParser(self)
        self.limit = ctx.config.max_request_headers_bytes
        self.buffer_limit = ctx.listener.config.buffer_limit
        self.parsing: Stream | None = None  # the stream whose request is being parsed
        self.active: Stream | None = None  # the stream being answered
        self.queue: deque[Stream] = deque()  # pipelined requests waiting their turn
        self.head_size = 0
        self.paused = 0
        self.closed = False
        self.upgraded = False
        self.idle_since = self.loop.time()
        self.peer_ip = b""
        self.peer_label = ""
        self.error: tuple[int, bytes] | None = None
        self.conn_named: list[bytes] = []  # header names listed in a Connection header
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
            stream = self.active
            if stream is not None:
                stream.tunnel_data(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgraded = True
            tail = data[exc.args[0] :]
            stream = self.active
            if tail and stream is not None:
                stream.tunnel_data(tail)
            return
        except httptools.HttpParserError as exc:
            return self._bad_request(exc)
        stream = self.parsing
        if stream is not None and not stream.headers_done:
            # llhttp buffers a partial header without calling us back; bound it here too.
            self.head_size += len(data)
            if self.head_size > self.limit:
                self._reject(431, b"request header block too large")

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
        stream = self.active
        if stream is not None and stream.upstream is not None:
            stream.upstream.pause_reading()

    def resume_writing(self) -> None:
        stream = self.active
        if stream is not None and stream.upstream is not None:
            stream.upstream.resume_reading()

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        stream = Stream(self, monotonic())
        self.parsing = stream
        self.head_size = 0
        self.conn_named = []
        if self.active is None:
            self.active = stream
        else:
            self.queue.append(stream)
            self.pause(PAUSE_PIPELINE)

    def on_url(self, url: bytes) -> None:
        stream = self.parsing
        assert stream is not None
        stream.url += url
        self.head_size += len(url)
        if self.head_size > self.limit:
            raise _HeaderTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        stream = self.parsing
        assert stream is not None
        if stream.headers_done:
            return  # a trailer of a chunked request: not relayed over HTTP/1.1
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.limit:
            raise _HeaderTooLarge
        name = name.lower()
        kind = _SPECIAL.get(name)
        if kind is None:
            stream.headers.append((name, value))
        elif kind == _HOST:
            if stream.authority is not None:
                raise httptools.HttpParserError("duplicate Host header")
            stream.authority = value.lower()
        elif kind == _XRID:
            stream.request_id = value
        elif kind == _XFF:
            stream.xff = value if stream.xff is None else stream.xff + b", " + value
        elif kind == _XFP:
            stream.xfp = value
        elif kind == _CL:
            stream.headers.append((name, value))
            stream.has_body = value != b"0"
        elif kind == _TE:
            # llhttp insists on "chunked" last; any other coding would be lost when this hop
            # re-frames the body, so refuse it (RFC 9112 §6.1: 501 for an unknown coding).
            # (Chunked not last is llhttp's to refuse with 400, as RFC 9112 §6.3 requires.)
            codings = value.strip().lower()
            if codings != b"chunked" and codings.endswith(b"chunked"):
                raise _UnsupportedCoding
            stream.chunked = True
            stream.has_body = True
        elif kind == _UPGRADE:
            stream.upgrade = value
        elif kind == _EXPECT:
            if value.lower() != b"100-continue":
                raise httptools.HttpParserError("unsupported Expect value")
            stream.expect = True
        elif kind == _CONNECTION:
            tokens = [t.strip().lower() for t in value.split(b",")]
            extra = [t for t in tokens if t not in (b"close", b"keep-alive", b"upgrade", b"")]
            if extra:  # RFC 9110 §7.6.1: headers named by Connection are hop-by-hop too
                self.conn_named.extend(extra)
        # _HOP: dropped

    def on_headers_complete(self) -> None:
        stream = self.parsing
        assert stream is not None
        parser = self.parser
        stream.headers_done = True
        if self.xfcc is not None:
            # The verified peer, as a header, before routing: route header matchers can select
            # on the caller's SPIFFE ID (e.g. a "contains URI=spiffe://…" string match).
            stream.headers.append((b"x-forwarded-client-cert", self.xfcc))
        if self.conn_named:
            named = self.conn_named
            stream.headers = [(n, v) for n, v in stream.headers if n not in named]
            self.conn_named = []
        stream.method = parser.get_method()
        stream.http10 = parser.get_http_version() == "1.0"
        stream.keep_alive = parser.should_keep_alive()
        if stream.upgrade is not None and not parser.should_upgrade():
            stream.upgrade = None
        if stream is self.active:
            stream.begin()

    def on_body(self, body: bytes) -> None:
        stream = self.parsing
        assert stream is not None
        stream.request_body(body)

    def on_message_complete(self) -> None:
        stream = self.parsing
        assert stream is not None
        self.parsing = None
        self.head_size = 0
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
        if self.queue:
            nxt = self.queue.popleft()
            self.active = nxt
            if not self.queue:
                self.resume(PAUSE_PIPELINE)
            if nxt.headers_done:
                nxt.begin()

    # ------------------------------------------------------------------ errors, flow, close

    def _bad_request(self, exc: Exception) -> None:
        cause = exc.__context__
        if isinstance(cause, _HeaderTooLarge):
            return self._reject(431, b"request header block too large")
        if isinstance(cause, _UnsupportedCoding):
            return self._reject(501, b"transfer codings other than chunked are not supported")
        if cause is not None and not isinstance(cause, httptools.HttpParserError):
            # A bug of ours inside a parser callback: say so loudly, answer 500, keep serving.
            log.error("internal error while handling a request from %s", self.peer_label, exc_info=cause)
            return self._reject(500, b"internal error")
        self.ctx.stats.downstream_cx_protocol_error += 1
        reason = str(cause if isinstance(cause, httptools.HttpParserError) else exc) or "malformed request"
        self._reject(400, b"bad request: " + reason.encode("latin-1", "replace"))

    def _reject(self, status: int, body: bytes) -> None:
        """Answer a request that cannot be parsed, then close (the byte stream is untrusted now)."""
        if status == 431:
            self.ctx.stats.downstream_rq_431 += 1
        self.upgraded = True  # stop parsing anything else on this connection
        stream = self.parsing
        if stream is not None and stream is self.active and not stream.response_started:
            stream.keep_alive = False
            if not stream.started:
                stream.open()
            stream.local_reply(LocalReply(status, body, "DPE"))
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
        return self.active is None and self.parsing is None
