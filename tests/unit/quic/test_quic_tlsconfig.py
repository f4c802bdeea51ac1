"""TlsConfig to aioquic's configuration: what carries over."""

from __future__ import annotations

from aioquic.tls import CipherSuite
from unit.tls.tls_fixtures import Leaf, Pki

from meshproxy.config.compile_quic import QUIC_SUITES
from meshproxy.quic.tlsconfig import SUITES, quic_configuration


def test_certificate_key_suites_and_alpn_carry_over(pki: Pki, server_leaf: Leaf) -> None:
    cfg = pki.config(server_leaf, server_side=True, alpn=("h3",), cipher_suites=("TLS_AES_128_GCM_SHA256",))
    quic = quic_configuration(cfg, idle_timeout=5.0)
    assert not quic.is_client and quic.alpn_protocols == ["h3"] and quic.idle_timeout == 5.0
    assert quic.cipher_suites == [CipherSuite.AES_128_GCM_SHA256]
    assert quic.certificate is not None and quic.certificate.subject.rfc4514_string() == "CN=server"


def test_the_compiler_knows_the_suites_aioquic_has() -> None:
    """compile_quic must not import aioquic, so it names the suites itself; they must agree."""
    assert set(QUIC_SUITES) == set(SUITES)
