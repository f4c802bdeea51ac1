"""TLS transport sockets in a bootstrap: what is read, and each refusal with its field path."""

from __future__ import annotations

import json
from typing import Any

import pytest
from certs import make_leaf

from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.errors import ConfigError

DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
DNS_SAN = {"san_type": "DNS", "matcher": {"exact": "a"}}
FC = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.common_tls_context"


def doc(common: dict[str, Any], secrets: list[dict[str, Any]] | None = None) -> str:
    hcm = {
        "@type": HCM,
        "stat_prefix": "in",
        "route_config": {"virtual_hosts": [{"name": "a", "domains": ["*"], "routes": []}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    listener = {
        "name": "in",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [
            {
                "filters": [{"name": "hcm", "typed_config": hcm}],
                "transport_socket": {
                    "name": "tls",
                    "typed_config": {"@type": DOWNSTREAM, "common_tls_context": common},
                },
            }
        ],
    }
    return json.dumps({"static_resources": {"listeners": [listener], "secrets": secrets or []}})


@pytest.mark.parametrize(
    ("common", "problem"),
    [
        (
            {"tls_certificate_sds_secret_configs": [{"name": "nope"}]},
            f'{FC}.tls_certificate_sds_secret_configs[0].name: no static secret "nope" '
            "(static_resources.secrets: none)",
        ),
        (
            {"tls_certificate_sds_secret_configs": [{"name": "x", "sds_config": {"ads": {}}}]},
            f"{FC}.tls_certificate_sds_secret_configs[0].sds_config: secrets over SDS (sds_config) arrive",
        ),
        (
            {"tls_params": {"tls_minimum_protocol_version": "TLSv1_1"}},
            f"{FC}.tls_params.tls_minimum_protocol_version: TLS 1.0 and 1.1 are not supported",
        ),
        (
            {"tls_params": {"ecdh_curves": ["FFDHE-9"]}},
            f'{FC}.tls_params.ecdh_curves[0]: "FFDHE-9" is not a supported group',
        ),
        (
            {
                "validation_context": {
                    "match_typed_subject_alt_names": [{"san_type": "OTHER_NAME", "matcher": {"exact": "a"}}]
                }
            },
            f"{FC}.validation_context.match_typed_subject_alt_names[0].san_type: "
            "OTHER_NAME is not supported; use URI, DNS, EMAIL or IP_ADDRESS",
        ),
        (
            {"tls_certificates": [{"certificate_chain": {"filename": "/nonexistent/c.pem"}}]},
            f"{FC}.tls_certificates[0].certificate_chain.filename: cannot read /nonexistent/c.pem",
        ),
    ],
    ids=["unknown-secret", "sds-config", "tls11", "unknown-group", "other-name-san", "missing-file"],
)
def test_tls_problems_name_their_field(common: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_bootstrap(doc(common))
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems


def test_a_secret_of_the_wrong_kind_is_named() -> None:
    secrets = [{"name": "ROOTCA", "validation_context": {}}]
    with pytest.raises(ConfigError) as raised:
        parse_bootstrap(doc({"tls_certificate_sds_secret_configs": [{"name": "ROOTCA"}]}, secrets))
    assert (
        f'{FC}.tls_certificate_sds_secret_configs[0].name: secret "ROOTCA" holds a validation_context, '
        "not a tls_certificate" in raised.value.problems
    )


def test_a_combined_validation_context_merges_the_secret_over_the_default() -> None:
    """Istio's form: SAN matchers in default_validation_context, the CA from the ROOTCA secret."""
    leaf = make_leaf(dns_sans=["server.example.com"])
    certificate = {
        "certificate_chain": {"inline_string": leaf.cert_pem.decode()},
        "private_key": {"inline_string": leaf.key_pem.decode()},
    }
    common = {
        "tls_certificates": [certificate],
        "combined_validation_context": {
            "default_validation_context": {"match_typed_subject_alt_names": [DNS_SAN]},
            "validation_context_sds_secret_config": {"name": "ROOTCA"},
        },
    }
    secrets = [
        {"name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_string": leaf.ca.cert_pem.decode()}}}
    ]
    tls = parse_bootstrap(doc(common, secrets)).listeners[0].filter_chains[0].tls
    assert tls is not None
    assert tls.trusted_ca == leaf.ca.cert_pem
    assert [m.san_type for m in tls.match_sans] == ["DNS"]


def test_a_combined_validation_context_names_a_missing_secret() -> None:
    common = {"combined_validation_context": {"validation_context_sds_secret_config": {"name": "ROOTCA"}}}
    with pytest.raises(ConfigError) as raised:
        parse_bootstrap(doc(common))
    assert (
        f"{FC}.combined_validation_context.validation_context_sds_secret_config.name: "
        'no static secret "ROOTCA" '
        "(static_resources.secrets: none)" in raised.value.problems
    )
