"""TlsConfig to aioquic's configuration: what carries over, and what QUIC refuses with its field."""

from __future__ import annotations

import pytest
from aioquic.tls import CipherSuite
from unit.tls.tls_fixtures import Leaf, Pki

from meshproxy.errors import ConfigError
from meshproxy.quic.tlsconfig import quic_configuration
from meshproxy.tls import TlsVersion


def test_certificate_key_suites_and_alpn_carry_over(pki: Pki, server_leaf: Leaf) -> None:
    cfg = pki.config(server_leaf, server_side=True, alpn=("h3",), cipher_suites=("TLS_AES_128_GCM_SHA256",))
    quic = quic_configuration(cfg, idle_timeout=5.0)
    assert not quic.is_client and quic.alpn_protocols == ["h3"] and quic.idle_timeout == 5.0
    assert quic.cipher_suites == [CipherSuite.AES_128_GCM_SHA256]
    assert quic.certificate is not None and quic.certificate.subject.rfc4514_string() == "CN=server"


def test_what_quic_cannot_do_is_refused_with_the_field(pki: Pki, server_leaf: Leaf) -> None:
    cfg = pki.config(
        server_leaf,
        server_side=True,
        min_version=TlsVersion.TLSv1_2,
        cipher_suites=("ECDHE-ECDSA-AES128-GCM-SHA256",),
        signature_algorithms=("ecdsa_secp256r1_sha256",),
    )
    with pytest.raises(ConfigError) as refused:
        quic_configuration(cfg)
    assert [p.split(":")[0] for p in refused.value.problems] == [
        "common_tls_context.tls_params.tls_minimum_protocol_version",
        "common_tls_context.tls_params.cipher_suites",
        "common_tls_context.tls_params.signature_algorithms",
    ]


def test_an_mldsa_certificate_is_refused_for_quic() -> None:
    pki = Pki("ML-DSA CA", mldsa=True)
    with pytest.raises(
        ConfigError, match=r"tls_certificates\[0\].private_key: a .*MLDSA65.* cannot sign a QUIC"
    ):
        quic_configuration(pki.config(pki.leaf("server"), server_side=True))
