"""``envoy.filters.network.rbac`` on a filter chain: a connection passes the rules or is closed.

Owns the I/O of the network RBAC filter, none of its policy (``rbac/runtime.py`` decides). The
gate stands between the transport (after TLS, when the chain has it: the peer certificate, the
group and the signature scheme are known) and the chain's terminal protocol. Envoy decides
``ONE_TIME_ON_FIRST_BYTE``; the gate decides when the connection is established, before the
terminal filter has it, with the same facts (the connection's, and no request): so a denied
caller never gets an upstream connection opened for it, nor a server-first greeting. Allowed,
the terminal protocol takes the transport over and the gate is gone (no cost per byte);
denied, the socket is closed unread and the listener's pre-connection slot given back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from meshproxy.addresses import address_of
from meshproxy.rbac.engine import Facts

if TYPE_CHECKING:
    from meshproxy.listener.chain_match import Address
    from meshproxy.rbac.runtime import RbacRuntime

log = logging.getLogger("meshproxy.rbac")


class RbacGate(asyncio.Protocol):
    """Decides in ``connection_made``; hands ``inner`` the transport or closes it."""

    def __init__(
        self, rbac: RbacRuntime, inner: asyncio.Protocol, local: Address, on_denied: Callable[[], None]
    ) -> None:
        self.rbac = rbac
        self.inner = inner
        self.local = local  # the original destination when original_dst restored it
        self.on_denied: Callable[[], None] | None = on_denied
        self.allowed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer, _ = address_of(transport.get_extra_info("peername"))
        host, port = self.local
        facts = Facts(peer=peer, local=host, local_port=port, tls=transport.get_extra_info("tls"))
        denied = self.rbac.check(facts)
        if denied is None:
            self.allowed = True
            transport.set_protocol(self.inner)
            self.inner.connection_made(transport)
            return
        # Counted (``<stat_prefix>.rbac.denied``); the line is for whoever debugs a policy.
        log.debug("connection from %s to %s:%d closed: %s", peer, host, port, denied)
        transport.close()

    def data_received(self, data: bytes) -> None:
        # Only the bytes the listener replays after connection_made reach the gate: the
        # inspected first bytes of a plaintext connection, passed on when allowed.
        if self.allowed:
            self.inner.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_denied is not None:
            self.on_denied()
            self.on_denied = None
