"""A fresh connection, from accept to the protocol of its filter chain.

Owns what Envoy's listener filters and ``ActiveTcpSocket`` do before a network filter has the
connection: admission (the listener's ``admit``), the original destination
(``envoy.filters.listener.original_dst``: the connection's local address becomes the one the
client dialled, read once with ``original_dst.py``; without the filter nothing is read), the
``use_original_dst`` hand-off to the listener bound to that address (``handoff.py``; the
target's listener filters, chains, stats and limits then apply, as in Envoy), the wait for
what tls_inspector / http_inspector need, filter-chain choice (``chain_match.py``), the
chain's connection_limit, and the hand-over to the codec (with TLS first when the chain has it,
and the chain's network RBAC gate, ``rbac_gate.py``, between the two).
Must not hold policy of its own: the choices are the pure modules'.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING

from meshproxy.addresses import address_of
from meshproxy.hcm.context import HttpContext
from meshproxy.listener.chain_match import Address, select_chain
from meshproxy.listener.codec_choice import CodecSelector
from meshproxy.listener.detect import MAX_PEEK, Detected, classify
from meshproxy.listener.handoff import handoff_target
from meshproxy.listener.original_dst import original_dst
from meshproxy.listener.rbac_gate import RbacGate
from meshproxy.tcp.proxy import TcpDownstream
from meshproxy.tls.transport import accept_tls

if TYPE_CHECKING:
    from meshproxy.listener.runtime import ListenerRuntime


class ChainSelector(asyncio.Protocol):
    """Chooses the filter chain for a fresh connection and hands the transport to its protocol.

    With tls_inspector or http_inspector configured, the choice waits for the first bytes
    (a ClientHello's SNI and ALPN, the HTTP/2 preface, an HTTP/1.x request line), bounded by
    ``listener_filters_timeout``; those bytes are then replayed into the chosen protocol.
    """

    def __init__(self, listener: ListenerRuntime) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        # The connection's local address (the original destination with the original_dst
        # filter) and its peer: what chains match on and what the protocol is told.
        self.local: Address = ("", 0)
        self.peer: Address = ("", 0)
        self.original: Address | None = None  # the destination original_dst restored
        self.buf = b""
        self.timer: asyncio.TimerHandle | None = None
        # True from admission until the connection is handed on (or closed): this protocol
        # then owns the pre-connection and gives its slot back if the socket closes.
        self.selecting = False
        # Over the chain's connection_limit, waiting out its delay: what arrives is dropped.
        self.refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener = self.listener
        if not listener.admit(transport):
            return
        self.selecting = True
        self.local = address_of(transport.get_extra_info("sockname"))
        self.peer = address_of(transport.get_extra_info("peername"))
        if listener.config.original_dst:
            restored = original_dst(transport.get_extra_info("socket"))
            if restored is not None:
                self.local = self.original = restored
                if listener.config.use_original_dst:
                    target = handoff_target(listener, listener.peers.values(), restored)
                    if target is not listener:
                        target.adopt(listener)
                        self.listener = listener = target
        config = listener.config
        if config.tls_inspector or config.http_inspector:
            self.transport = transport  # type: ignore[assignment]  # asyncio passes a BaseTransport; stream transports are Transports
            if config.listener_filters_timeout > 0:
                loop = asyncio.get_running_loop()
                self.timer = loop.call_later(config.listener_filters_timeout, self._timed_out)
            return
        self._select(transport, Detected("raw_buffer"), b"")

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # uvloop may deliver a read already under way when reading was paused
        self.buf += data
        found = classify(self.buf)
        if found is None:
            if len(self.buf) < MAX_PEEK:
                return
            found = Detected("raw_buffer")
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        config = self.listener.config
        tls = found.transport_protocol == "tls"
        if not (config.tls_inspector if tls else config.http_inspector):
            found = Detected("raw_buffer")  # only what a configured inspector would have seen
        assert self.transport is not None
        self._select(self.transport, found, self.buf)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.selecting:
            self.selecting = False
            self.listener.pre_closed()

    def _timed_out(self) -> None:
        # Envoy: on timeout the connection goes on without what the inspectors would have found
        # (continue_on_listener_filters_timeout: false closes it; that is Envoy's default).
        self.timer = None
        self.listener.stats.downstream_listener_filter_timeout += 1
        if self.transport is not None:
            self.transport.close()

    def _refuse(self, transport: asyncio.BaseTransport, delay: float) -> None:
        """Over the chain's connection_limit: nothing more is read, the socket is closed after
        ``delay`` (Envoy's ``delay``: a client that retries at once is slowed down), and
        ``connection_lost`` gives the pre-connection slot back."""
        self.refused = True
        if delay <= 0:
            transport.close()
            return
        transport.pause_reading()  # type: ignore[attr-defined]  # a stream transport: create_server's
        self.timer = asyncio.get_running_loop().call_later(delay, transport.close)

    def _select(self, transport: asyncio.BaseTransport, found: Detected, replay: bytes) -> None:
        listener = self.listener
        while listener.successor is not None:  # accepted before an xDS swap: the new config serves it
            listener = listener.successor
        chain = select_chain(
            listener.config,
            self.local,
            self.peer,
            found.server_name,
            found.transport_protocol,
            found.application_protocols,
        )
        if chain is None or (listener.draining and not listener.graceful):
            listener.stats.no_filter_chain_match += int(chain is None)
            transport.close()  # connection_lost gives the slot back
            return
        ctx = listener.contexts[id(chain)]
        limit = ctx.connection_limit
        if limit is not None and not limit.admit():
            self._refuse(transport, limit.config.delay)
            return
        if listener is not self.listener:
            listener.adopt(self.listener)
        self.selecting = False
        proto: asyncio.Protocol = (
            CodecSelector(
                ctx,
                listener.config.listener_filters_timeout,
                partial(listener.pre_closed, limit),
                self.original,
            )
            if isinstance(ctx, HttpContext)
            else TcpDownstream(ctx, self.original)
        )
        rbac = listener.network_rbac.get(id(chain))
        if rbac is not None:
            proto = RbacGate(rbac, proto, self.local, partial(listener.pre_closed, limit))
        tls = listener.tls_contexts.get(id(chain))
        if tls is None:
            transport.set_protocol(proto)
            proto.connection_made(transport)
            if replay:
                proto.data_received(replay)
        else:
            # The inner protocol meets the connection only once the handshake has succeeded.
            peer = transport.get_extra_info("peername")
            timeout = listener.admission.overload.state.scale_timeout(
                "TRANSPORT_SOCKET_CONNECT", chain.transport_socket_connect_timeout
            )
            tls_proto = accept_tls(
                transport,  # type: ignore[arg-type]  # a stream transport: create_server's
                tls,
                proto,
                on_handshake=partial(listener.handshake_done, peer, limit),
                handshake_timeout=timeout or None,
            )
            if replay:
                tls_proto.data_received(replay)
