"""The OpenSSL context built from a ``TlsConfig``.

Owns ``build_context``, which turns a ``TlsConfig`` into a pyOpenSSL ``Context``: versions,
groups from the PQ policy, cipher suites, signature algorithms, certificate chain and key
(ECDSA, RSA, Ed25519 or ML-DSA), trust anchors and peer verification, ALPN, session tickets and
whole-record writes. Imported when the first TLS context is built (``context.py``), never by
the config compiler, so a configuration without TLS does not load OpenSSL.

Must not import asyncio or sockets; OpenSSL calls pyOpenSSL lacks go through ``_openssl``.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from OpenSSL import SSL, crypto

from meshproxy.errors import ConfigError
from meshproxy.tls import _openssl
from meshproxy.tls.config import TlsConfig

# The session ID context a server stamps on its sessions; OpenSSL refuses to resume a session
# with client authentication unless one is set.
_SESSION_ID_CONTEXT = b"meshproxy"


def build_context(cfg: TlsConfig) -> SSL.Context:
    """A fresh OpenSSL context for ``cfg``; raises ConfigError naming what OpenSSL refused."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(cfg.min_version)
    ctx.set_max_proto_version(cfg.max_version)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    _openssl.set_modes(ctx)
    params = "common_tls_context.tls_params"
    problems = []
    if not _openssl.set_groups(ctx, cfg.pq_policy.openssl_groups):
        problems.append(f"{params}.ecdh_curves: OpenSSL refused {cfg.pq_policy.openssl_groups}")
    if cfg.signature_algorithms and not _openssl.set_sigalgs(ctx, ":".join(cfg.signature_algorithms)):
        problems.append(
            f"{params}.signature_algorithms: OpenSSL refused {':'.join(cfg.signature_algorithms)}"
        )
    tls13 = [s for s in cfg.cipher_suites if s.startswith("TLS_")]
    tls12 = [s for s in cfg.cipher_suites if not s.startswith("TLS_")]
    for suites, setter in ((tls13, ctx.set_tls13_ciphersuites), (tls12, ctx.set_cipher_list)):
        try:
            if suites:
                setter(":".join(suites).encode())
        except SSL.Error:
            problems.append(f"{params}.cipher_suites: OpenSSL refused {':'.join(suites)}")
    problems += _load_identity(ctx, cfg)
    if cfg.trusted_ca is not None:
        problems += _load_trust(ctx, cfg.trusted_ca)
        mode = SSL.VERIFY_PEER
        if cfg.require_client_certificate:
            mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        _openssl.set_verify(ctx, mode)
    if cfg.server_side:
        ctx.set_session_id(_SESSION_ID_CONTEXT)
        if cfg.alpn:
            ctx.set_alpn_select_callback(_alpn_selector(cfg.alpn))
    elif cfg.alpn:
        ctx.set_alpn_protos([p.encode() for p in cfg.alpn])
    if problems:
        raise ConfigError(problems)
    return ctx


def _load_identity(ctx: SSL.Context, cfg: TlsConfig) -> list[str]:
    if not cfg.certificate_chain:
        return []
    field = "common_tls_context.tls_certificates[0]"
    try:
        chain = x509.load_pem_x509_certificates(cfg.certificate_chain)
    except ValueError as exc:
        return [f"{field}.certificate_chain: not a PEM certificate chain ({exc})"]
    try:
        key = load_pem_private_key(cfg.private_key, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return [f"{field}.private_key: not an unencrypted PEM private key ({exc})"]
    der = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    ctx.use_certificate(chain[0])
    for cert in chain[1:]:
        ctx.add_extra_chain_cert(cert)
    if not _openssl.use_private_key(ctx, der):
        return [f"{field}.private_key: does not match the certificate, or OpenSSL refused it"]
    return []


def _load_trust(ctx: SSL.Context, bundle: bytes) -> list[str]:
    field = "common_tls_context.validation_context.trusted_ca"
    try:
        anchors = x509.load_pem_x509_certificates(bundle)
    except ValueError as exc:
        return [f"{field}: not a PEM certificate bundle ({exc})"]
    store = ctx.get_cert_store()
    assert store is not None
    for cert in anchors:
        store.add_cert(crypto.X509.from_cryptography(cert))
    return []


def _alpn_selector(ours: tuple[str, ...]) -> Callable[[SSL.Connection, list[bytes]], bytes]:
    """Server-side ALPN: our first protocol the client offers; none in common is not fatal (Envoy)."""
    preference = [p.encode() for p in ours]

    def select(_conn: SSL.Connection, offered: list[bytes]) -> bytes:
        for proto in preference:
            if proto in offered:
                return proto
        return SSL.NO_OVERLAPPING_PROTOCOLS  # type: ignore[return-value]  # pyOpenSSL's sentinel for "no ALPN"

    return select
