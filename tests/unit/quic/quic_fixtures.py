"""Two QUIC connections wired to each other in memory (no sockets), with an injected clock.

``Pair`` moves datagrams between a client and a server ``PqQuicConnection`` until neither has
anything to send, and keeps each side's events. Imported as ``unit.quic.quic_fixtures``.
"""

from __future__ import annotations

from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header

from meshproxy.quic.handshake import PqQuicConnection
from meshproxy.quic.tlsconfig import quic_configuration
from meshproxy.tls import TlsConfig

CLIENT_ADDR = ("10.0.0.1", 40000)
SERVER_ADDR = ("10.0.0.2", 443)


class Pair:
    """``client`` connects to a server made from ``server_cfg`` once its first datagram is seen."""

    def __init__(self, server_cfg: TlsConfig, client: QuicConnection) -> None:
        self.server_cfg = server_cfg
        self.client = client
        self.server: PqQuicConnection | None = None
        self.now = 0.0
        self.events: dict[str, list[events.QuicEvent]] = {"client": [], "server": []}
        self.wire_bytes = {"client": 0, "server": 0}  # by the side that sent them
        self.client_addr = CLIENT_ADDR  # where the client's datagrams come from (it may move)
        client.connect(SERVER_ADDR, now=self.now)

    def _server_for(self, datagram: bytes) -> PqQuicConnection:
        if self.server is None:
            header = pull_quic_header(Buffer(data=datagram), host_cid_length=8)
            self.server = PqQuicConnection(
                configuration=quic_configuration(self.server_cfg),
                original_destination_connection_id=header.destination_cid,
                tls_config=self.server_cfg,
            )
        return self.server

    def pump(self, horizon: float = 5.0) -> Pair:
        """Exchange datagrams; when quiet, jump the clock to the next timer, up to ``horizon`` s on."""
        until = self.now + horizon
        while True:
            moved = False
            for datagram, _addr in self.client.datagrams_to_send(now=self.now):
                self.wire_bytes["client"] += len(datagram)
                self._server_for(datagram).receive_datagram(datagram, self.client_addr, now=self.now)
                moved = True
            if self.server is not None:
                for datagram, _addr in self.server.datagrams_to_send(now=self.now):
                    self.wire_bytes["server"] += len(datagram)
                    self.client.receive_datagram(datagram, SERVER_ADDR, now=self.now)
                    moved = True
            self._collect()
            if moved:
                continue
            conns = [c for c in (self.client, self.server) if c is not None and c.get_timer() is not None]
            due = min((c.get_timer() or until for c in conns), default=until)
            if due >= until:
                return self
            self.now = due
            for conn in conns:
                if (conn.get_timer() or until) <= self.now:
                    conn.handle_timer(now=self.now)

    def _collect(self) -> None:
        for name, conn in (("client", self.client), ("server", self.server)):
            while conn is not None and (event := conn.next_event()) is not None:
                self.events[name].append(event)

    def completed(self, side: str) -> bool:
        return any(isinstance(e, events.HandshakeCompleted) for e in self.events[side])

    def terminated(self, side: str) -> events.ConnectionTerminated | None:
        return next((e for e in self.events[side] if isinstance(e, events.ConnectionTerminated)), None)


def client_connection(cfg: TlsConfig) -> PqQuicConnection:
    return PqQuicConnection(configuration=quic_configuration(cfg), tls_config=cfg)
