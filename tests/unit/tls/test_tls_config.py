"""TlsConfig's own checks, and what build_context refuses, each with its Envoy field path."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sans import san_matchers
from unit.tls.tls_fixtures import Leaf, Link, Pki, spiffe_id

from meshproxy.errors import ConfigError
from meshproxy.tls import TlsConfig, TlsContext, TlsVersion, build_context
from meshproxy.tls.config import SanType
from meshproxy.tls.policy import PqMode, PqPolicy

CERTS = "common_tls_context.tls_certificates"
VALIDATION = "common_tls_context.validation_context"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"server_side": True}, f"{CERTS}: a server needs a certificate chain and key"),
        ({"certificate_chain": b"x"}, f"{CERTS}[0]: give both certificate_chain and private_key"),
        ({"require_client_certificate": True}, "require_client_certificate: needs a DownstreamTlsContext"),
        (
            {"match_sans": san_matchers(("exact", "spiffe://x"))},
            f"{VALIDATION}.match_typed_subject_alt_names: needs",
        ),
        (
            {"min_version": TlsVersion.TLSv1_3, "max_version": TlsVersion.TLSv1_2},
            "tls_minimum_protocol_version",
        ),
        ({"server_side": True, "certificate_chain": b"x", "private_key": b"y", "sni": "a"}, "sni: only"),
    ],
)
def test_config_checks(fields: dict[str, Any], problem: str) -> None:
    base = {"server_side": False, **fields}
    with pytest.raises(ConfigError) as bad:
        TlsConfig(**base)
    assert any(problem in p for p in bad.value.problems), bad.value.problems


def _uris(*uris: str) -> dict[SanType, tuple[str, ...]]:
    return {"URI": uris}


def test_identity_matchers() -> None:
    cfg = TlsConfig(
        server_side=False,
        trusted_ca=b"",
        match_sans=san_matchers(("exact", "spiffe://a/x"), ("prefix", "spiffe://b/")),
    )
    assert cfg.identity_allowed(_uris("spiffe://a/x")) and cfg.identity_allowed(
        _uris("spiffe://z", "spiffe://b/y")
    )
    assert not cfg.identity_allowed(_uris("spiffe://a/xy")) and not cfg.identity_allowed(_uris())
    assert TlsConfig(server_side=False).identity_allowed(_uris())


@pytest.mark.parametrize(
    ("san_type", "matcher", "sans", "allowed"),
    [
        pytest.param("DNS", ("exact", "api.example.com"), ("api.example.com",), True, id="dns-exact"),
        pytest.param("DNS", ("exact", "api.example.com"), ("API.Example.com",), True, id="dns-any-case"),
        pytest.param("DNS", ("exact", "api.example.com"), ("*.example.com",), True, id="dns-wildcard-san"),
        pytest.param(
            "DNS", ("exact", "a.api.example.com"), ("*.example.com",), False, id="dns-wildcard-one-label"
        ),
        pytest.param("DNS", ("exact", "example.com"), ("*.example.com",), False, id="dns-wildcard-not-apex"),
        pytest.param("DNS", ("suffix", ".example.com"), ("db.example.com",), True, id="dns-suffix"),
        pytest.param("EMAIL", ("contains", "@corp."), ("ops@corp.example",), True, id="email-contains"),
        pytest.param("IP_ADDRESS", ("exact", "10.0.0.7"), ("10.0.0.7",), True, id="ip-exact"),
        pytest.param("IP_ADDRESS", ("exact", "10.0.0.7"), ("10.0.0.70",), False, id="ip-exact-no-prefix"),
        pytest.param(
            "URI",
            ("safe_regex", {"regex": "spiffe://td/ns/[a-z]+/sa/web"}),
            ("spiffe://td/ns/prod/sa/web",),
            True,
            id="uri-regex",
        ),
        pytest.param(
            "URI",
            ("safe_regex", {"regex": "spiffe://td/ns/[a-z]+/sa/web"}),
            ("spiffe://td/ns/prod/sa/web2",),
            False,
            id="uri-regex-full-match",
        ),
        pytest.param("DNS", ("exact", "api.example.com"), (), False, id="other-type-only"),
    ],
)
def test_typed_san_matchers(
    san_type: SanType, matcher: tuple[str, Any], sans: tuple[str, ...], allowed: bool
) -> None:
    cfg = TlsConfig(server_side=False, trusted_ca=b"", match_sans=san_matchers(matcher, san_type=san_type))
    peer: dict[SanType, tuple[str, ...]] = (
        {"URI": ("spiffe://td/x",), san_type: sans} if san_type != "URI" else {"URI": sans}
    )
    assert cfg.identity_allowed(peer) is allowed


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"certificate_chain": b"not pem"}, f"{CERTS}[0].certificate_chain: not a PEM certificate chain"),
        ({"private_key": b"not pem"}, f"{CERTS}[0].private_key: not an unencrypted PEM private key"),
        ({"trusted_ca": b"not pem"}, f"{VALIDATION}.trusted_ca: not a PEM certificate bundle"),
        ({"signature_algorithms": ("rsa_md5",)}, "tls_params.signature_algorithms: OpenSSL refused rsa_md5"),
        ({"cipher_suites": ("TLS_NULL",)}, "tls_params.cipher_suites: OpenSSL refused TLS_NULL"),
        ({"pq_policy": PqPolicy(PqMode.OFF, ("X9999",))}, "tls_params.ecdh_curves: OpenSSL refused X9999"),
    ],
)
def test_what_openssl_refuses(pki: Pki, server_leaf: Leaf, fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as bad:
        build_context(pki.config(server_leaf, server_side=True, **fields))
    assert any(problem in p for p in bad.value.problems), bad.value.problems


def test_key_must_match_certificate(pki: Pki, server_leaf: Leaf, client_leaf: Leaf) -> None:
    with pytest.raises(ConfigError, match="private_key: does not match the certificate"):
        build_context(replace(pki.config(server_leaf, server_side=True), private_key=client_leaf.key))


def test_cipher_suite_and_signature_algorithm_chosen(pki: Pki, server_leaf: Leaf, client_leaf: Leaf) -> None:
    tls = {
        "cipher_suites": ("TLS_CHACHA20_POLY1305_SHA256",),
        "signature_algorithms": ("ecdsa_secp256r1_sha256",),
    }
    server = TlsContext(pki.config(server_leaf, server_side=True, **tls))
    client = TlsContext(pki.config(client_leaf, server_side=False, **tls))
    done = Link(server, client).pump()
    assert (
        done.client.negotiated is not None and done.client.negotiated.cipher == "TLS_CHACHA20_POLY1305_SHA256"
    )
    assert done.client.negotiated.peer_uris == (spiffe_id("server"),)
