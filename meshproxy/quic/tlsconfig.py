"""A ``TlsConfig`` as aioquic's ``QuicConfiguration``: certificate, key, suites, ALPN, server name.

Owns the translation made once per listener or cluster (parsing PEM costs more than a
handshake's bookkeeping). What QUIC cannot do of a ``TlsConfig`` (TLS 1.2, suites other than
TLS 1.3's, ``signature_algorithms``, an ML-DSA key) is refused when the configuration is
compiled (``config/compile_quic.py``), so this translation does not fail. The peer checks and
groups are ``handshake.PqContext``'s. Must not import asyncio or sockets.
"""

from __future__ import annotations

from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import CipherSuite, load_pem_x509_certificates
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from meshproxy.tls.config import TlsConfig

SUITES = {f"TLS_{s.name}": s for s in CipherSuite if s is not CipherSuite.EMPTY_RENEGOTIATION_INFO_SCSV}


def quic_configuration(cfg: TlsConfig, **transport: object) -> QuicConfiguration:
    """aioquic's configuration for ``cfg``; ``transport`` holds QuicConfiguration's transport fields."""
    config = QuicConfiguration(
        is_client=not cfg.server_side,
        alpn_protocols=list(cfg.alpn) or None,
        cipher_suites=[SUITES[name] for name in cfg.cipher_suites] or None,
        server_name=cfg.sni or None,
        **transport,  # type: ignore[arg-type]
    )
    if cfg.certificate_chain:
        chain = load_pem_x509_certificates(cfg.certificate_chain)
        config.certificate, config.certificate_chain = chain[0], chain[1:]
        config.private_key = load_pem_private_key(cfg.private_key, password=None)
    return config
