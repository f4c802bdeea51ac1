"""A QUIC listener: the listener runtime of a UDP address serving HTTP/3.

Owns what differs from a TCP listener (``listener/runtime.py``, whose chain contexts, stats,
admission, connection tracking and drain it keeps): a UDP socket under a ``QuicEndpoint``
instead of ``create_server``; aioquic's configuration built once per config from the one filter
chain's ``TlsConfig`` (ALPN ``h3`` unless the chain names others) and ``Listener.quic``; and new
clients admitted before their handshake (``admit_one``), so that handshakes in progress count
as pre-connections, as TLS handshakes on TCP do. GOAWAY reaches HTTP/3 connections on drain.

Departure: an xDS update that replaces a QUIC listener binds a new socket rather than handing
the old one over (``server.apply`` hands over stream sockets only), so the old listener's live
connections stop receiving and their clients reconnect (docs/quic.md).
Imported only when a listener has ``quic`` (``server.py``); must not know about HTTP/3 frames.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Sequence
from typing import Any

from aioquic.quic.configuration import QuicConfiguration

from meshproxy.config.model import Listener
from meshproxy.hcm.context import HttpContext
from meshproxy.listener.runtime import ListenerRuntime, bind_socket
from meshproxy.quic.downstream import H3Downstream
from meshproxy.quic.endpoint import QuicEndpoint
from meshproxy.quic.handshake import PqQuicConnection
from meshproxy.quic.tlsconfig import quic_configuration
from meshproxy.router.table import RouteTable
from meshproxy.tls.config import TlsConfig

# Handshakes in progress above which a new client must first answer a Retry (RFC 9000 §8.1.2).
RETRY_THRESHOLD = 64


class QuicListenerRuntime(ListenerRuntime):
    endpoint: QuicEndpoint | None = None
    retry_threshold = RETRY_THRESHOLD

    def update(self, config: Listener, route_tables: Sequence[RouteTable] = ()) -> None:
        super().update(config, route_tables)
        quic = config.quic
        assert quic is not None  # server.py makes this runtime for QUIC listeners only
        self.chain = config.filter_chains[0] if config.filter_chains else config.default_filter_chain
        assert self.chain is not None and self.chain.tls is not None  # compile_quic's rules
        tls = self.chain.tls
        self.tls_config: TlsConfig = tls if tls.alpn else dataclasses.replace(tls, alpn=("h3",))
        self.quic_config: QuicConfiguration = quic_configuration(
            self.tls_config,
            idle_timeout=quic.idle_timeout,
            max_data=quic.initial_connection_window_size,
            max_stream_data=quic.initial_stream_window_size,
            max_datagram_size=quic.max_packet_length,
        )
        self.max_streams = quic.max_concurrent_streams

    @property
    def handshakes(self) -> int:
        return self.pending

    async def start(self, sock: socket.socket | None = None) -> None:
        loop = asyncio.get_running_loop()
        if sock is None:
            sock = bind_socket(self.config.address, self.config.ipv4_compat)
        endpoint = self.endpoint = QuicEndpoint(self, self.retry_threshold)
        await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
        self._bound = sock.getsockname()[:2]

    def bound_address(self) -> tuple[str, int]:
        assert self._bound is not None
        return self._bound

    # ------------------------------------------------------------------ the endpoint's owner

    def connection_for(self, quic: PqQuicConnection, addr: Any, endpoint: QuicEndpoint) -> H3Downstream:
        assert self.chain is not None
        ctx = self.contexts[id(self.chain)]
        assert isinstance(ctx, HttpContext)
        assert self.config.quic is not None
        return H3Downstream(quic, self, ctx, addr, endpoint, self.config.quic.handshake_timeout)

    def retry_sent(self) -> None:
        self.stats.quic_retry_sent += 1

    # ------------------------------------------------------------------ drain

    def stop_accepting(self) -> None:
        """No new connections; the endpoint keeps serving the live ones until they end."""
        if self.endpoint is not None:
            self.endpoint.accepting = False

    def close(self) -> None:
        super().close()
        if self.endpoint is not None:
            for conn in {id(c): c for c in self.endpoint.connections.values()}.values():
                conn.close()  # type: ignore[attr-defined]  # an H3Downstream
            self.endpoint.close()

    def begin_graceful_drain(self) -> None:
        super().begin_graceful_drain()
        self._goaway()

    async def drain(self, timeout: float, *, close_idle: bool = True) -> int:
        self._goaway()
        return await super().drain(timeout, close_idle=close_idle)

    def _goaway(self) -> None:
        for conn in list(self.connections):
            if isinstance(conn, H3Downstream):
                conn.goaway()
