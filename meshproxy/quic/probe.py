"""``meshproxy tls-probe --quic``: one QUIC handshake with meshproxy's own stack, and its evidence.

Owns a one-shot client connection (``PqQuicConnection``: X25519MLKEM768 under the chosen policy,
mutual TLS when given a certificate) that completes its handshake, then proves the server kept
it (a PING answered: a server refuses a client certificate only after the client has finished),
and returns the ``Negotiated`` record the TCP probe prints. Imported only for ``--quic``.
"""

from __future__ import annotations

import asyncio
import dataclasses

from aioquic.asyncio.protocol import QuicConnectionProtocol

from meshproxy.quic.handshake import PqQuicConnection
from meshproxy.quic.tlsconfig import quic_configuration
from meshproxy.tls.config import TlsConfig
from meshproxy.tls.engine import Negotiated
from meshproxy.tls.errors import TlsError


async def quic_handshake(host: str, port: int, cfg: TlsConfig, timeout: float = 10.0) -> Negotiated:
    """What a QUIC handshake with ``host:port`` settled; TlsError when refused (either side),
    TimeoutError when nothing answers, OSError when the address is unusable."""
    if not cfg.alpn:
        cfg = dataclasses.replace(cfg, alpn=("h3",))
    quic = PqQuicConnection(configuration=quic_configuration(cfg), tls_config=cfg)
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        lambda: QuicConnectionProtocol(quic), remote_addr=(host, port)
    )
    try:
        async with asyncio.timeout(timeout):
            client.connect((host, port))
            try:
                await client.wait_connected()
                await client.ping()
            except ConnectionError:
                ended = quic._close_event
                reason = ended.reason_phrase if ended is not None else "connection closed"
                raise TlsError(reason or "refused", code="quic_refused") from None
        return quic.negotiated
    finally:
        client.close()
        transport.close()
