"""A ``TlsConfig`` as aioquic's ``QuicConfiguration``, and what QUIC cannot do of it.

Owns the translation made once per listener or cluster (parsing PEM costs more than a
handshake's bookkeeping) and its refusals, each naming the Envoy field path:

- QUIC is TLS 1.3 only (RFC 9001 §4.2): a ``tls_minimum_protocol_version`` below it is refused;
- ``cipher_suites`` must be TLS 1.3 suites aioquic has; ``signature_algorithms`` is refused
  (aioquic offers a fixed list);
- the certificate's key must be one aioquic can sign with (ECDSA P-256/P-384, Ed25519, Ed448,
  RSA): an ML-DSA-65 certificate, which the TCP engine can use, is refused for QUIC.

The peer checks and groups are ``handshake.PqContext``'s. Must not import asyncio or sockets.
"""

from __future__ import annotations

from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import CipherSuite, load_pem_x509_certificates
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from meshproxy.errors import ConfigError
from meshproxy.tls.config import TlsConfig, TlsVersion

_TLS = "common_tls_context"
_SUITES = {f"TLS_{s.name}": s for s in CipherSuite if s is not CipherSuite.EMPTY_RENEGOTIATION_INFO_SCSV}
_SIGNING_KEYS = (
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    rsa.RSAPrivateKey,
)


def quic_configuration(cfg: TlsConfig, **transport: object) -> QuicConfiguration:
    """aioquic's configuration for ``cfg``; ``transport`` holds QuicConfiguration's transport fields."""
    problems = []
    if cfg.min_version < TlsVersion.TLSv1_3:
        problems.append(
            f"{_TLS}.tls_params.tls_minimum_protocol_version: QUIC is TLS 1.3 only (RFC 9001 §4.2); "
            f"{cfg.min_version.name} is not possible"
        )
    bad_suites = [name for name in cfg.cipher_suites if name not in _SUITES]
    if bad_suites:
        problems.append(
            f"{_TLS}.tls_params.cipher_suites: {', '.join(bad_suites)} not available over QUIC; "
            f"use {', '.join(_SUITES)}"
        )
    if cfg.signature_algorithms:
        problems.append(
            f"{_TLS}.tls_params.signature_algorithms: not supported over QUIC "
            "(aioquic offers a fixed list); remove it from the QUIC listener or cluster"
        )
    config = QuicConfiguration(
        is_client=not cfg.server_side,
        alpn_protocols=list(cfg.alpn) or None,
        cipher_suites=[_SUITES[name] for name in cfg.cipher_suites if name in _SUITES] or None,
        server_name=cfg.sni or None,
        **transport,  # type: ignore[arg-type]
    )
    if cfg.certificate_chain:
        chain = load_pem_x509_certificates(cfg.certificate_chain)
        key = load_pem_private_key(cfg.private_key, password=None)
        if not isinstance(key, _SIGNING_KEYS):
            problems.append(
                f"{_TLS}.tls_certificates[0].private_key: a {type(key).__name__} cannot sign a QUIC "
                "handshake (aioquic signs with ECDSA, EdDSA or RSA); use an ECDSA P-256 certificate"
            )
        config.certificate, config.certificate_chain, config.private_key = chain[0], chain[1:], key
    if problems:
        raise ConfigError(problems)
    return config
