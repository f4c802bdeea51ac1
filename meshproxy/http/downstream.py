"""The downstream side of an HTTP/1.1 connection: bytes from a client in, streams out.

Owns one accepted connection running the http_connection_manager filter: llhttp parsing via
httptools callbacks, request-smuggling defences, keep-alive and pipelining (requests are
answered in order; a pipelined request waits, its bytes bounded by one read while reading is
paused), flow control towards the upstream, and the connection's timeouts (kept by the
listener's sweep: request head and request timeouts, keep-alive idle, max connection duration).
Per-request work lives in ``stream.py``.

The request-side defences, beyond llhttp's strict mode (conflicting Content-Length and
Transfer-Encoding, bad chunk sizes, obs-fold, bare CR/LF), each with its reason:
1. The head (request line and fields) and the trailer section are each bounded by
   ``max_request_headers_kb`` and ``max_headers_count`` (431 and close), cut at the limit
   plus at most one read: httptools keeps a partial field in memory until it completes.
   Chunk extensions (which llhttp skips without buffering) are bounded by the same size.
2. Framing fields are never hop-by-hop: a ``Connection`` token naming ``Content-Length``,
   ``Transfer-Encoding``, ``Host`` or ``Upgrade`` is ignored (codec.NEVER_HOP_BY_HOP).
3. ``Transfer-Encoding`` is the list of every line: anything but a lone ``chunked`` is refused
   (501 when ``chunked`` is last, llhttp's 400 otherwise); this hop re-frames the body.
4. ``Host`` and absolute-form authorities follow RFC 3986 (no userinfo); a target with a
   fragment is refused (Envoy's ``http.reject_path_with_fragment``); only HTTP/1.0 and 1.1
   are spoken; a request line with other than single spaces is refused when it starts a read
   (one that starts inside a read is re-serialised with single spaces anyway).
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

import httptools

from meshproxy.hcm.context import LocalReply
from meshproxy.hcm.identity import downstream_peer
from meshproxy.http import codec
from meshproxy.http.codec import PAUSE_PIPELINE, PAUSE_WRITE_FULL
from meshproxy.http.stream import Stream

if TYPE_CHECKING:
    from collections.abc import Callable

    from meshproxy.hcm.context import HttpContext
    from meshproxy.overload.config import TimerType
    from meshproxy.tls.engine import Negotiated

log = logging.getLogger("meshproxy.http")

# Bytes handed to llhttp at a time: bounds how many pipelined requests one read can queue.
FEED_SLICE = 8 * 1024

# Request headers the stream handles itself instead of relaying as they are.
# llhttp reads Content-Length into 64 bits unsigned; a next hop may hold it signed. Eighteen
# digits (under 10^18 bytes) is every real body, and what the fuzzers' reference model allows.
_MAX_CL_DIGITS = 18
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
    # Only meaningful to an h2c upgrade, which this hop never performs (rule 5).
    b"http2-settings": _HOP,
}

_CHUNKED = [b"chunked"]


class _Refused(Exception):
    """Raised inside a parser callback: answer ``status`` and close (llhttp stops there)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(body.decode("latin-1"))
        self.status = status
        self.body = body


def _codings(lines: list[bytes]) -> list[bytes]:
    """The transfer codings of every Transfer-Encoding line, in order (RFC 9112 §6.1)."""
    tokens = (t.strip(b" \t").lower() for t in b",".join(lines).split(b","))
    return [t for t in tokens if t]


class DownstreamConnection(asyncio.Protocol):
    def __init__(self, ctx: HttpContext, original_dst: tuple[str, int] | None = None) -> None:
        self.ctx = ctx
        self.listener = ctx.listener
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made, before any use
        self.parser = httptools.HttpRequestParser(self)
        config = ctx.config
        self.limit = config.max_request_headers_bytes
        self.max_fields = config.max_headers_count
        self.underscores = (
            None if config.headers_with_underscores == "ALLOW" else config.headers_with_underscores
        )
        self.buffer_limit = ctx.listener.config.buffer_limit
        self.parsing: Stream | None = None  # the stream whose request is being parsed
        self.active: Stream | None = None  # the stream being answered
        self.queue: deque[Stream] = deque()  # pipelined requests waiting their turn
        self.head_size = 0  # bytes of the fields completed so far in this head or trailer section
        self.raw_head = 0  # bytes read while this head was incomplete (bounds a partial field)
        self.framing = 0  # chunk-header and trailer bytes since the last chunk header
        self.fields = 0  # fields in this head or trailer section
        self.codings: list[bytes] = []  # this request's Transfer-Encoding lines
        self.upgrading = False  # the request being parsed is an upgrade this hop tunnels
        self.tail_body = 0  # body bytes of a refused upgrade still to take from the tail
        self.backlog: bytes | None = None  # read but not parsed while requests are queued
        self.line: bytes | None = b""  # the start of a request line, while it is checked
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
            stream = self.tunnel_stream  # None after a refusal: nothing more is read as anything
            if stream is not None:
                stream.tunnel_data(data)
            return
        if self.backlog is not None:  # a read that was in flight when reading paused
            self.backlog += data
            return
        if self.line is not None and not self._request_line_ok(data):
            return self._reject(400, b"bad request: malformed request line")
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
            piece = data[start:end]
            if self.tail_body:  # the body of a refused upgrade (rule 5) is not llhttp's
                piece = self._body_from_tail(piece)
            if piece and not self._feed(piece):
                rest = data[end:]
                stream = self.tunnel_stream
                if rest and stream is not None:
                    stream.tunnel_data(rest)  # an upgrade: the rest of the read is the tunnel's
                return

    def _feed(self, data: bytes) -> bool:
        """One slice through llhttp; False once this connection parses no more (refused, or
        switched to a tunnel: then the tunnel got the slice's tail)."""
        stream = self.parsing
        if stream is not None:
            # Counted before the parser runs: its callbacks reset the counters as parts end.
            if not stream.headers_done:
                self.raw_head += len(data)
            elif stream.chunked:
                self.framing += len(data)
        parser = self.parser
        while True:
            try:
                parser.feed_data(data)
                break
            except httptools.HttpParserUpgrade as exc:
                data = data[exc.args[0] :]
                if self.upgrading:
                    self.upgraded = True
                    stream = self.tunnel_stream
                    if data and stream is not None:
                        stream.tunnel_data(data)
                    return False
                if self.tail_body:  # an upgrade this hop refused (rule 5): HTTP goes on
                    data = self._body_from_tail(data)
                if not data:
                    break
            except httptools.HttpParserError as exc:
                self._bad_request(exc)
                return False
        stream = self.parsing
        if stream is None:
            if self.line is None and not self.upgraded:
                self.line = b""  # the next read starts a request
        elif not stream.headers_done:
            if max(self.head_size, self.raw_head) > self.limit:
                self._reject(431, b"request header block too large")
        elif self.framing > self.limit:
            self._reject(431, b"request trailers or chunk extensions too large")
        return not self.upgraded

    def _parse_backlog(self) -> None:
        data, self.backlog = self.backlog, None
        if data is not None and not self.closed and not self.upgraded:
            self._parse(data)
        if not self.queue and self.backlog is None:
            self.resume(PAUSE_PIPELINE)

    def _request_line_ok(self, data: bytes) -> bool:
        """Rule 4: is the request line that starts this read ``method SP target SP version``?
        (llhttp accepts runs of spaces between the parts.) An incomplete line is kept, bounded
        by the head limit, and checked when its end arrives."""
        line = self.line
        start = 0
        if line:
            data = line + data[: self.limit]
        else:
            while start < len(data) and data[start] in b"\r\n":
                start += 1  # RFC 9112 §2.2: empty lines before a request line are ignored
        end = data.find(b"\n", start)
        if end < 0:
            self.line = data[start : start + self.limit]
            return True
        self.line = None
        return data.count(b" ", start, end) == 2

    def _body_from_tail(self, data: bytes) -> bytes:
        """Rule 5: the Content-Length body of a refused upgrade, out of what llhttp took for
        upgrade bytes; returns what follows it (the next request, parsed as usual)."""
        body = data[: self.tail_body]
        self.tail_body -= len(body)
        self.on_body(body)
        if not self.tail_body:
            self.on_message_complete()
        return data[len(body) :]

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
        if self.line == b"":
            self.line = None  # a request that starts inside a read (rule 4)
        stream = Stream(self, monotonic())
        self.parsing = stream
        self.head_size = self.raw_head = self.fields = 0
        self.conn_named = []
        self.codings = []
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
            raise _Refused(431, b"request header block too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        stream = self.parsing
        assert stream is not None
        self.head_size += len(name) + len(value) + 4
        self.fields += 1
        if self.head_size > self.limit:
            raise _Refused(431, b"request header block too large")
        if self.fields > self.max_fields:
            raise _Refused(431, b"too many header fields")
        if stream.headers_done:
            return  # a trailer of a chunked request: not relayed over HTTP/1.1
        if self.underscores is not None and b"_" in name:
            stats = self.ctx.stats
            if self.underscores == "REJECT_REQUEST":
                stats.requests_rejected_with_underscores_in_headers += 1
                raise _Refused(400, b"bad request: header name with underscores")
            stats.dropped_headers_with_underscores += 1
            return
        name = name.lower()
        kind = _SPECIAL.get(name)
        if kind is None:
            stream.headers.append((name, value))
        elif kind == _HOST:
            if stream.authority is not None:
                raise httptools.HttpParserError("duplicate Host header")
            if not codec.authority_ok(value):
                raise _Refused(400, b"bad request: invalid Host header")
            stream.authority = value.lower()
        elif kind == _XRID:
            stream.request_id = value
        elif kind == _XFF:
            stream.xff = value if stream.xff is None else stream.xff + b", " + value
        elif kind == _XFP:
            stream.xfp = value
        elif kind == _CL:
            if len(value) > _MAX_CL_DIGITS:  # found by the fuzzer: past 2^63 for a signed next hop
                raise _Refused(400, b"bad request: Content-Length over 18 digits")
            stream.headers.append((name, value))
            stream.has_body = value != b"0"
        elif kind == _TE:
            self.codings.append(value)  # checked as a whole list (rule 3)
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
            if extra:  # RFC 9110 §7.6.1: headers named by Connection are hop-by-hop too (rule 2)
                self.conn_named.extend(t for t in extra if t not in codec.NEVER_HOP_BY_HOP)
        # _HOP: dropped

    def on_headers_complete(self) -> None:
        stream = self.parsing
        assert stream is not None
        parser = self.parser
        stream.headers_done = True
        self.head_size = self.framing = self.fields = 0  # the trailer section's own budget
        if parser.get_http_version() not in ("1.1", "1.0"):
            raise _Refused(400, b"bad request: unsupported HTTP version")
        if b"#" in stream.url:
            raise _Refused(400, b"bad request: request target with a fragment")
        if self.codings:
            if parser.get_http_version() == "1.0":
                # RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
                raise _Refused(400, b"bad request: Transfer-Encoding in an HTTP/1.0 request")
            codings = _codings(self.codings)
            if codings != _CHUNKED:
                if codings[-1:] == _CHUNKED:  # RFC 9112 §6.1: 501 for a coding we cannot apply
                    raise _Refused(501, b"transfer codings other than chunked are not supported")
                raise _Refused(400, b"bad request: chunked must be the final transfer coding")
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
        stream.keep_alive = parser.should_keep_alive() and not self.expired
        if not stream.has_body:
            stream.expect = False  # RFC 9110 §10.1.1: nothing to continue with
        upgrade = stream.upgrade
        self.upgrading = parser.should_upgrade()  # an Upgrade request, or CONNECT
        if not self.upgrading:
            stream.upgrade = None
        elif upgrade is not None and (stream.has_body or b"h2c" in upgrade.lower()):
            # Rule 5: sent on as a plain request. llhttp hands whatever follows the head over as
            # upgrade bytes: a Content-Length body is taken from them (``_body_from_tail``).
            if stream.chunked:
                raise _Refused(400, b"bad request: upgrade request with a chunked body")
            if stream.has_body:
                self.tail_body = int(next(v for n, v in stream.headers if n == b"content-length"))
            stream.upgrade = None
            self.upgrading = False
        if self.upgrading:
            self.tunnel_stream = stream
        if stream is self.active:
            stream.begin()

    def on_body(self, body: bytes) -> None:
        stream = self.parsing
        assert stream is not None
        self.framing -= len(body)
        stream.request_body(body)

    def on_chunk_header(self) -> None:
        self.framing = 0

    def on_message_complete(self) -> None:
        if self.tail_body:
            return  # the body is still to come, out of the upgrade bytes
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

    def _bad_request(self, exc: Exception) -> None:
        cause = exc.__context__
        if isinstance(cause, _Refused):
            return self._reject(cause.status, cause.body)
        if cause is not None and not isinstance(cause, httptools.HttpParserError):
            # A bug of ours inside a parser callback: say so loudly, answer 500, keep serving.
            log.error("internal error while handling a request from %s", self.peer_label, exc_info=cause)
            return self._reject(500, b"internal error")
        reason = str(cause if isinstance(cause, httptools.HttpParserError) else exc) or "malformed request"
        self._reject(400, b"bad request: " + reason.encode("latin-1", "replace"))

    def _reject(self, status: int, body: bytes, flags: str = "DPE") -> None:
        """Answer a request that cannot be parsed, then close (the byte stream is untrusted now)."""
        stats = self.ctx.stats
        if status == 431:
            stats.downstream_rq_431 += 1
        elif status == 400:
            stats.downstream_cx_protocol_error += 1
        self.upgraded = True  # stop parsing anything else on this connection
        self.tunnel_stream = None  # ... or relaying it anywhere
        self.line = None
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
