"""Codec selection for one connection of an http_connection_manager (``codec_type``).

Owns the choice between the HTTP/1.1 and HTTP/2 downstream protocols: ``HTTP1``/``HTTP2``
as configured; ``AUTO`` by the ALPN the TLS handshake settled, else by the first bytes (the
HTTP/2 preface means prior-knowledge h2c, anything else HTTP/1.x), like Envoy's AUTO codec.
Waiting for those bytes is bounded by the listener's ``listener_filters_timeout``; a
connection that ends before the choice tells the listener (``on_abandoned``: its slot goes back).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from meshproxy.http.downstream import DownstreamConnection
from meshproxy.http2.downstream import H2Downstream
from meshproxy.listener.detect import PREFACE

if TYPE_CHECKING:
    from meshproxy.hcm.context import HttpContext


class CodecSelector(asyncio.Protocol):
    def __init__(
        self,
        ctx: HttpContext,
        timeout: float,
        on_abandoned: Callable[[], None],
        original_dst: tuple[str, int] | None = None,
    ) -> None:
        self.ctx = ctx
        self.original_dst = original_dst  # handed to the connection (ORIGINAL_DST clusters)
        self.timeout = timeout
        self.on_abandoned: Callable[[], None] | None = on_abandoned
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        codec = self.ctx.config.codec_type
        tls = transport.get_extra_info("tls")
        alpn = tls.alpn if tls is not None else None
        if codec == "HTTP2" or (codec == "AUTO" and alpn == "h2"):
            return self._hand(transport, H2Downstream(self.ctx, original_dst=self.original_dst))
        if codec == "HTTP1" or alpn is not None:
            return self._hand(transport, DownstreamConnection(self.ctx, self.original_dst))
        self.transport = transport  # type: ignore[assignment]  # asyncio passes a BaseTransport; stream transports are Transports
        if self.timeout > 0:
            self.timer = asyncio.get_running_loop().call_later(self.timeout, transport.close)
        return None

    def data_received(self, data: bytes) -> None:
        buf = self.buf = self.buf + data
        n = min(len(buf), len(PREFACE))
        if buf[:n] == PREFACE[:n]:
            if n < len(PREFACE):
                return
            self._hand(self.transport, H2Downstream(self.ctx, buf, self.original_dst))  # type: ignore[arg-type]  # set in connection_made, before any data
            return
        proto = DownstreamConnection(self.ctx, self.original_dst)
        self._hand(self.transport, proto)  # type: ignore[arg-type]  # set in connection_made, before any data
        proto.data_received(buf)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.on_abandoned is not None:
            self.on_abandoned()
            self.on_abandoned = None

    def _hand(self, transport: asyncio.BaseTransport, proto: asyncio.Protocol) -> None:
        self.on_abandoned = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport.set_protocol(proto)
        proto.connection_made(transport)
