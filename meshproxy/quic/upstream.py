"""The upstream side of HTTP/3: QUIC connections to one host, pooled as HTTP/2's are.

Owns ``H3Upstream`` (one QUIC connection carrying many ``H2Stream`` exchanges, presenting the
interface of ``http2.upstream.H2Upstream`` to the stream relay and to the pool) and ``H3Pool``
(``http2.pool.H2Pool`` whose connections are QUIC: the same stream slots, waiters, breakers
and idle timeout). A connection is opened over UDP with the cluster's current ``TlsConfig``
(its certificates follow rotation), X25519MLKEM768 and the peer checks of ``handshake.py``;
it takes streams once its handshake has completed, so a refused peer costs no request. Each
completed handshake is counted by group on the cluster, as on TCP.
Rules: (1) a response that ended after its request did frees the stream's slot at once
(HTTP/2's rule 5.1); (2) a reset with H3_REQUEST_REJECTED before any response is a refused
stream (retried by the stream relay) and a sign that the server drains; so is a GOAWAY (which
aioquic drops: ``GoawayReader`` reads it), whose streams at or above its ID are retried elsewhere;
either way the connection takes no new streams; (3) the connection's end resets its open streams.
Imported only when a cluster has ``http3`` (``http2/stream.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from aioquic.buffer import Buffer, BufferReadError
from aioquic.h3 import events as h3e
from aioquic.h3.connection import FrameType, H3Connection
from aioquic.quic import events as qe
from h2.errors import ErrorCodes

from meshproxy.http2.pool import H2Pool, pool_for
from meshproxy.quic.handshake import PqQuicConnection
from meshproxy.quic.peer import H3_REQUEST_REJECTED, STREAM_GONE, H3Peer, h2_code
from meshproxy.quic.tlsconfig import quic_configuration
from meshproxy.tls.counts import count_handshake
from meshproxy.upstream.cluster import connect_failure

if TYPE_CHECKING:
    from meshproxy.http2.stream import H2Stream
    from meshproxy.upstream.breaker import ResourceManager
    from meshproxy.upstream.cluster import ClusterRuntime, Host

log = logging.getLogger("meshproxy.quic")


class GoawayReader:
    """The server's control stream read for GOAWAY, which aioquic parses and drops (RFC 9114
    §5.2: a client may retry every request at or above the ID it names). Fed the bytes of the
    server's unidirectional streams; keeps only what an unfinished frame needs."""

    __slots__ = ("buffer", "control", "goaway_id", "others")

    def __init__(self) -> None:
        self.control: int | None = None
        self.others: set[int] = set()  # the server's encoder and decoder streams
        self.buffer = b""
        self.goaway_id: int | None = None

    def feed(self, sid: int, data: bytes) -> None:
        if sid % 4 != 3 or sid in self.others or (self.control is not None and sid != self.control):
            return
        buf = Buffer(data=self.buffer + data)
        try:
            if self.control is None:
                if buf.pull_uint_var() != 0x00:  # not a control stream (RFC 9114 §6.2.1)
                    self.others.add(sid)
                    return
                self.control = sid
            while not buf.eof():
                start = buf.tell()
                kind, length = buf.pull_uint_var(), buf.pull_uint_var()
                if buf.capacity - buf.tell() < length:
                    buf.seek(start)
                    break
                payload = buf.pull_bytes(length)
                if kind == FrameType.GOAWAY:
                    self.goaway_id = Buffer(data=payload).pull_uint_var()
        except BufferReadError:
            buf.seek(start if self.control is not None else 0)
        self.buffer = buf.data_slice(buf.tell(), buf.capacity)


class H3Upstream(H3Peer):
    def __init__(self, pool: H3Pool, quic: PqQuicConnection) -> None:
        super().__init__(quic)
        self.pool = pool
        self.streams: dict[int, H2Stream] = {}
        self.headers_seen: set[int] = set()  # streams whose response headers arrived
        self.ready = False
        self.goaway = False
        self.control = GoawayReader()
        self.idle_since = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None  # armed by the pool while idle

    # ------------------------------------------------------------------ pool interface

    def capacity(self) -> int:
        if self.closed or self.goaway or not self.ready:
            return 0
        return self.pool.max_streams - len(self.streams)

    def is_reusable(self) -> bool:
        return self.capacity() > 0

    def open_stream(self, stream: H2Stream, headers: list[tuple[bytes, bytes]], end: bool) -> int:
        sid = self.quic.get_next_available_stream_id()
        self.streams[sid] = stream
        self.send_headers(sid, headers, end)
        return sid

    def ack(self, sid: int, size: int) -> None:
        """Nothing to give back: aioquic reopened the server's windows when the data arrived."""

    def stream_closed(self, sid: int, code: int) -> bool:
        """The relay is done with ``sid``: reset it if still open; True when a reset was sent."""
        if self.streams.pop(sid, None) is None:
            return False
        self.headers_seen.discard(sid)
        self.waiting.pop(sid, None)
        sent = self.reset(sid, code)
        self._released()
        return sent

    def _released(self) -> None:
        self.pool.released(self)  # type: ignore[arg-type]  # H2Pool takes H2Upstream's pool interface, which this has

    def stream_share(self) -> int:
        return self.pool.cluster.config.buffer_limit // max(1, len(self.streams))

    def close(self) -> None:  # type: ignore[override]  # the pool's close(), no arguments
        if not self.closed:
            self.quic.close()
            self.transmit()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.quic.negotiated if name == "tls" else default

    def error_received(self, exc: Exception) -> None:
        """An ICMP error on the UDP socket (port unreachable): a handshake waiting ends now."""
        waiter = self._connected_waiter
        if waiter is not None and not waiter.done():
            self._connected_waiter = None
            waiter.set_exception(exc)

    # ------------------------------------------------------------------ QUIC events

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.HandshakeCompleted):
            self.h3 = H3Connection(self.quic)
            self.ready = True
            stats = self.pool.cluster.stats
            stats.upstream_cx_http3_total += 1
            stats.upstream_cx_active += 1
            count_handshake(stats, self.quic.negotiated)
        elif isinstance(event, qe.ConnectionTerminated):
            self._terminated()
        elif isinstance(event, qe.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                self._released()
                if event.error_code == H3_REQUEST_REJECTED and not stream.response_started:
                    self._going_away()  # rule 2: the server drains; the retry needs another connection
                    stream.upstream_refused()
                else:
                    stream.upstream_reset(h2_code(event.error_code))
        elif self.h3 is not None:
            try:
                for h3_event in self.h3.handle_event(event):
                    self._h3_event(h3_event)
                if isinstance(event, qe.StreamDataReceived) and event.stream_id % 4 == 3:
                    self.control.feed(event.stream_id, event.data)
                    if self.control.goaway_id is not None:
                        self._going_away(self.control.goaway_id)
            except STREAM_GONE as exc:
                log.info(
                    "cluster %s: HTTP/3 error from %s: %s",
                    self.pool.cluster.config.name,
                    self.pool.host.label,
                    exc,
                )

    def _h3_event(self, event: h3e.H3Event) -> None:
        sid = getattr(event, "stream_id", -1)
        stream = self.streams.get(sid)
        if stream is None:
            return
        if isinstance(event, h3e.HeadersReceived):
            if sid in self.headers_seen:
                stream.response_trailers(event.headers)
            else:
                self.headers_seen.add(sid)
                stream.response_headers(event.headers, event.stream_ended)
                return  # an ended HEADERS is the response's end (the relay knows)
        elif isinstance(event, h3e.DataReceived) and event.data:
            stream.response_data(event.data, len(event.data))
        if getattr(event, "stream_ended", False) and not stream.finished:
            if stream.up_half.done:  # rule 1
                del self.streams[sid]
                self.headers_seen.discard(sid)
                self._released()
            stream.response_end()

    def _going_away(self, last: int | None = None) -> None:
        """The server takes no new streams here (its GOAWAY named ``last``, or it rejected one):
        streams at or above ``last`` were never processed and are retried elsewhere."""
        if self.goaway:
            return
        self.goaway = True
        self.pool.cluster.stats.upstream_cx_close_notify += 1
        self.pool.lost(self)  # type: ignore[arg-type]  # H2Pool takes H2Upstream's pool interface, which this has
        for sid in [s for s in self.streams if last is not None and s >= last]:
            self.streams.pop(sid).upstream_refused()
        if not self.streams:
            self.close()

    def _terminated(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.waiting.clear()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        pool = self.pool
        if self.ready:
            pool.cluster.stats.upstream_cx_active -= 1
        pool.cluster.connection_closed(pool.resources)  # gives back its max_connections slot
        pool.lost(self)  # type: ignore[arg-type]  # H2Pool takes H2Upstream's pool interface, which this has
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:  # rule 3
            stream.upstream_reset(ErrorCodes.CANCEL, b"upstream connection closed")


class H3Pool(H2Pool):
    """``H2Pool`` over QUIC connections, and the host's QUIC brokenness for the TCP fallback.

    With ``http3_fallback`` (auto_config), a connection attempt that got no QUIC answer at all (UDP
    refused, or silence until connect_timeout; a TLS refusal is an answer) marks the host's QUIC
    broken for ``BROKEN_FOR`` seconds, doubling while it stays broken (Envoy's rule), counted in
    ``upstream_http3_broken``: its waiting streams and the next ones go to the host's HTTP/2 pool
    over TCP with the same TLS.
    """

    conns: list[H3Upstream]  # type: ignore[assignment]
    BROKEN_FOR = 300.0

    def __init__(self, cluster: ClusterRuntime, host: Host, resources: ResourceManager) -> None:
        super().__init__(cluster, host, resources)
        self.broken_until = 0.0
        self.broken_for = self.BROKEN_FOR

    def broken(self, now: float) -> bool:
        return self.cluster.config.http3_fallback and now < self.broken_until

    def _mark_broken(self, now: float) -> None:
        self.cluster.stats.upstream_http3_broken += 1
        if self.broken_until:  # broken before: stay away longer
            self.broken_for *= 2
        self.broken_until = now + self.broken_for
        log.warning(
            "cluster %s: QUIC to %s is blocked; HTTP/2 over TCP for %.0f s",
            self.cluster.config.name,
            self.host.label,
            self.broken_for,
        )

    def _fail_waiters(self, reason: str) -> None:
        if not self.broken(asyncio.get_running_loop().time()):
            super()._fail_waiters(reason)
            return
        tcp = pool_for(self.cluster, self.host, self.resources)
        waiters, self.waiters = self.waiters, deque()
        for stream in waiters:
            self.cluster.unpend(stream.x.resources)
            stream.pool = tcp
            tcp.request(stream)

    def _connect(self) -> None:
        cluster = self.cluster
        if not cluster.can_connect(self.resources):
            if not self.conns and not self.connecting:
                self._fail_waiters("upstream overflow: max_connections")
            return
        self.connecting += 1
        cluster.stats.upstream_cx_total += 1
        cluster.connection_opened(self.resources)
        task = asyncio.get_running_loop().create_task(self._open())
        task.add_done_callback(self._connected)  # type: ignore[arg-type]  # an H3Upstream stands in

    async def _open(self) -> H3Upstream:
        cluster, host = self.cluster, self.host
        options = cluster.config.http3
        assert options is not None and cluster.tls is not None  # compile_quic's rules
        tls = cluster.tls.cfg
        if not tls.alpn:
            tls = dataclasses.replace(tls, alpn=("h3",))
        quic = PqQuicConnection(
            configuration=quic_configuration(
                tls,
                idle_timeout=options.idle_timeout,
                max_data=options.initial_connection_window_size,
                max_stream_data=options.initial_stream_window_size,
                max_datagram_size=options.max_packet_length,
            ),
            tls_config=tls,
            max_streams=options.max_concurrent_streams,
        )
        address = (host.address.host, host.address.port)
        loop = asyncio.get_running_loop()
        conn: H3Upstream | None = None
        try:
            async with asyncio.timeout(cluster.config.connect_timeout):
                _, conn = await loop.create_datagram_endpoint(
                    lambda: H3Upstream(self, quic), remote_addr=address
                )
                assert conn is not None
                conn.connect(address)
                await conn.wait_connected()
        except (OSError, TimeoutError, ConnectionError) as exc:
            if isinstance(exc, TimeoutError):
                cluster.stats.upstream_cx_connect_timeout += 1
            cluster.stats.upstream_cx_connect_fail += 1
            ended = conn is not None and conn.quic._close_event is not None
            log.warning(
                "cluster %s: QUIC connection to %s failed: %s",
                cluster.config.name,
                host.label,
                conn.quic._close_event.reason_phrase if ended else connect_failure(exc),  # type: ignore[union-attr]
            )
            if conn is None or not conn.closed:  # (a terminated connection gave its slot back)
                cluster.connection_closed(self.resources)
            if cluster.config.http3_fallback and not ended:  # no QUIC answer at all: blocked
                self._mark_broken(loop.time())
            if conn is not None:
                conn.closed = True
                conn._transport.close()  # type: ignore[union-attr]
            raise
        return conn


_POOLS: dict[tuple[Host, ResourceManager], H3Pool] = {}


def h3_pool_for(cluster: ClusterRuntime, host: Host, resources: ResourceManager) -> H2Pool:
    """The QUIC pool of ``host`` for the routing priority whose breakers are ``resources``, or
    its HTTP/2 pool over TCP while the host's QUIC is broken (``H3Pool``)."""
    key = (host, resources)
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = H3Pool(cluster, host, resources)
    else:
        pool.cluster = cluster
    if pool.broken_until and pool.broken(asyncio.get_running_loop().time()):
        return pool_for(cluster, host, resources)
    return pool
