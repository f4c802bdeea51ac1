"""One UDP socket serving QUIC: datagrams to their connection, new clients admitted, Retry under load.

Owns what aioquic's ``QuicServer`` does (version negotiation, routing a datagram by its
destination connection ID, the table of IDs each connection issues and retires) with three of
meshproxy's rules, which is why it is not aioquic's class:

1. a new connection is a ``PqQuicConnection`` (X25519MLKEM768 and the listener's TLS policy);
2. a new client is admitted by the listener (``admit_one``: the global connection limit, the
   overload manager, the descriptor reserve) before any handshake work; refused, it is dropped
   unanswered (it cannot be told more cheaply than by silence);
3. while more handshakes are in progress than ``retry_threshold``, a client must first prove its
   address with a Retry (RFC 9000 §8.1.2): a spoofed flood then costs one small datagram per
   packet and no handshake state. Below the threshold the extra round trip is not paid.
   (Before a client's address is validated, aioquic sends at most three times what it received:
   the amplification limit of RFC 9000 §8.)

Must not hold HTTP policy: the connections it makes are the listener's (``Owner.connection_for``).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Protocol

from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler

from meshproxy.quic.handshake import PqQuicConnection
from meshproxy.tls.config import TlsConfig

SMALLEST_INITIAL = 1200  # RFC 9000 §14.1: a client's Initial datagram is padded to this


class Connection(Protocol):
    """What the endpoint drives: aioquic's ``QuicConnectionProtocol`` shape."""

    def datagram_received(self, data: bytes, addr: Any) -> None: ...
    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...


class Owner(Protocol):
    """The listener runtime behind the endpoint."""

    @property
    def quic_config(self) -> QuicConfiguration: ...
    @property
    def tls_config(self) -> TlsConfig: ...
    @property
    def max_streams(self) -> int: ...
    @property
    def handshakes(self) -> int: ...

    def admit_one(self) -> bool: ...
    def connection_for(self, quic: PqQuicConnection, addr: Any, endpoint: QuicEndpoint) -> Connection: ...
    def retry_sent(self) -> None: ...


class QuicEndpoint(asyncio.DatagramProtocol):
    def __init__(self, owner: Owner, retry_threshold: int) -> None:
        self.owner = owner
        self.retry_threshold = retry_threshold
        self.connections: dict[bytes, Connection] = {}  # by every connection ID they answer to
        self.transport: asyncio.DatagramTransport | None = None
        self.accepting = True
        self._retry = QuicRetryTokenHandler()
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # create_datagram_endpoint's

    def datagram_received(self, data: bytes, addr: Any) -> None:
        config = self.owner.quic_config
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=config.connection_id_length)
        except ValueError:
            return
        assert self.transport is not None
        if (
            header.packet_type != QuicPacketType.VERSION_NEGOTIATION
            and header.version is not None
            and header.version not in config.supported_versions
        ):
            packet = encode_quic_version_negotiation(
                source_cid=header.destination_cid,
                destination_cid=header.source_cid,
                supported_versions=config.supported_versions,
            )
            self.transport.sendto(packet, addr)
            return
        conn = self.connections.get(header.destination_cid)
        if conn is None:
            if not (
                self.accepting
                and header.packet_type == QuicPacketType.INITIAL
                and len(data) >= SMALLEST_INITIAL
            ):
                return
            conn = self._new_connection(header, addr)
            if conn is None:
                return
        conn.datagram_received(data, addr)

    def _new_connection(self, header: Any, addr: Any) -> Connection | None:
        assert self.transport is not None and header.version is not None
        original, retry_source = header.destination_cid, None
        if header.token:
            try:
                original = self._retry.validate_token(
                    address=addr,
                    destination_cid=header.destination_cid,
                    token=header.token,
                    now=self._loop.time(),
                )
            except ValueError:
                return None  # not a token of ours (or expired): the client starts over
            retry_source = header.destination_cid
        elif self.owner.handshakes >= self.retry_threshold:
            source_cid = os.urandom(8)
            token = self._retry.create_token(
                address=addr,
                original_destination_connection_id=header.destination_cid,
                retry_source_connection_id=source_cid,
                now=self._loop.time(),
            )
            packet = encode_quic_retry(
                version=header.version,
                source_cid=source_cid,
                destination_cid=header.source_cid,
                original_destination_cid=header.destination_cid,
                retry_token=token,
            )
            self.transport.sendto(packet, addr)
            self.owner.retry_sent()
            return None
        if not self.owner.admit_one():
            return None
        owner = self.owner
        quic = PqQuicConnection(
            configuration=owner.quic_config,
            original_destination_connection_id=original,
            retry_source_connection_id=retry_source,
            tls_config=owner.tls_config,
            max_streams=owner.max_streams,
        )
        conn = owner.connection_for(quic, addr, self)
        conn.connection_made(self.transport)
        self.connections[header.destination_cid] = conn
        self.connections[quic.host_cid] = conn
        return conn

    # ------------------------------------------------------------------ connection IDs

    def cid_issued(self, cid: bytes, conn: Connection) -> None:
        self.connections[cid] = conn

    def cid_retired(self, cid: bytes, conn: Connection) -> None:
        if self.connections.get(cid) is conn:
            del self.connections[cid]

    def terminated(self, conn: Connection) -> None:
        for cid in [cid for cid, c in self.connections.items() if c is conn]:
            del self.connections[cid]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
