"""compile_rbac: what is refused, with its field path, and the filters' stat namespaces."""

# ruff: noqa: E501 (the tables hold whole expected messages; splitting them hides what users read)

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac
from google.protobuf import json_format

from meshproxy.config.compile_common import Ctx
from meshproxy.config.compile_rbac import (
    TLS_PRINCIPAL_URL,
    http_filter,
    http_per_route,
    network_filter,
    rules_of,
)
from meshproxy.rbac.model import RbacFilter, Rules, TlsPrincipal


def compile_rules(doc: dict[str, Any]) -> tuple[Rules | None, list[str]]:
    problems: list[str] = []
    rules = rules_of(json_format.ParseDict(doc, rbac_pb2.RBAC()), Ctx("rules", problems))
    assert (rules is None) == bool(problems)
    return rules, problems


def one_policy(permission: dict[str, Any], principal: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"policies": {"p": {"permissions": [permission], "principals": [principal or {"any": True}]}}}


P = 'rules.policies["p"]'


@pytest.mark.parametrize(
    ("permission", "principal", "problem"),
    [
        (
            {"metadata": {"filter": "f"}},
            None,
            f"{P}.permissions[0].metadata: is not supported: metadata matchers are not supported (meshproxy keeps no dynamic metadata)",
        ),
        (
            {"uri_template": {"name": "t"}},
            None,
            f"{P}.permissions[0].uri_template: is not supported: uri_template is not supported; use url_path with safe_regex",
        ),
        (
            {"matcher": {"name": "m"}},
            None,
            f"{P}.permissions[0].matcher: is not supported: matcher extensions are not supported",
        ),
        (
            {"any": False},
            None,
            f"{P}.permissions[0].any: must be true (any: false matches nothing; leave the rule out instead)",
        ),
        (
            {"not_rule": {"metadata": {"filter": "f"}}},
            None,
            f"{P}.permissions[0].not_rule.metadata: is not supported: metadata matchers are not supported (meshproxy keeps no dynamic metadata)",
        ),
        (
            {"and_rules": {"rules": [{"any": True}, {"destination_port_range": {"start": 9, "end": 9}}]}},
            None,
            f"{P}.permissions[0].and_rules.rules[1].destination_port_range: [9, 9) is not a port range; ports are 0..65535 and start < end",
        ),
        (
            {"destination_ip": {"address_prefix": "10.0.0.300", "prefix_len": 8}},
            None,
            f'{P}.permissions[0].destination_ip: "10.0.0.300/8" is not an IP network',
        ),
        (
            {"url_path": {"path": {"safe_regex": {"regex": "(unclosed"}}}},
            None,
            f'{P}.permissions[0].url_path.path.safe_regex.regex: "(unclosed" does not compile: missing ): (unclosed',
        ),
        (
            {"url_path": {"path": {"prefix": ""}}},
            None,
            f"{P}.permissions[0].url_path.path.prefix: an empty prefix matches everything; it must not be empty",
        ),
        (
            {},
            None,
            f"{P}.permissions[0]: a permission needs one rule (and_rules, or_rules, not_rule, any, header, url_path, ...)",
        ),
        (
            {"any": True},
            {"filter_state": {"key": "k"}},
            f"{P}.principals[0].filter_state: is not supported: filter state matchers are not supported (meshproxy keeps no filter state)",
        ),
        (
            {"any": True},
            {"metadata": {"filter": "f"}},
            f"{P}.principals[0].metadata: is not supported: metadata matchers are not supported (meshproxy keeps no dynamic metadata)",
        ),
        (
            {"any": True},
            {"or_ids": {"ids": [{"sourced_metadata": {}}]}},
            f"{P}.principals[0].or_ids.ids[0].sourced_metadata: is not supported: metadata matchers are not supported (meshproxy keeps no dynamic metadata)",
        ),
        (
            {"any": True},
            {"header": {"name": "x", "range_match": {"start": 1, "end": 2}}},
            f"{P}.principals[0].header.range_match: is not supported; use string_match with safe_regex",
        ),
        (
            {"any": True},
            {
                "custom": {
                    "name": "other",
                    "typed_config": {"@type": "type.googleapis.com/google.protobuf.Empty"},
                }
            },
            f'{P}.principals[0].custom.typed_config: custom principal "other" (type.googleapis.com/google.protobuf.Empty) is not supported; meshproxy\'s one custom principal is meshproxy.rbac.v1.TlsPrincipal',
        ),
        (
            {"any": True},
            {
                "custom": {
                    "name": "pq",
                    "typed_config": {"@type": TLS_PRINCIPAL_URL, "groups": ["X25519MLKEM1024"]},
                }
            },
            f'{P}.principals[0].custom.typed_config.groups[0]: "X25519MLKEM1024" is not a TLS group; use one of MLKEM1024, MLKEM512, MLKEM768, P-256, P-384, P-521, SecP256r1MLKEM768, SecP384r1MLKEM1024, X25519, X25519MLKEM768, X448',
        ),
        (
            {"any": True},
            {
                "custom": {
                    "name": "pq",
                    "typed_config": {"@type": TLS_PRINCIPAL_URL, "signature_algorithms": ["ml-dsa-65"]},
                }
            },
            f'{P}.principals[0].custom.typed_config.signature_algorithms[0]: "ml-dsa-65" is not a signature scheme; use one of ecdsa_secp256r1_sha256, ecdsa_secp384r1_sha384, ecdsa_secp521r1_sha512, ed25519, ed448, mldsa44, mldsa65, mldsa87, rsa_pkcs1_sha256, rsa_pss_rsae_sha256, rsa_pss_rsae_sha384, rsa_pss_rsae_sha512',
        ),
    ],
)
def test_refusals_name_their_path(
    permission: dict[str, Any], principal: dict[str, Any] | None, problem: str
) -> None:
    assert compile_rules(one_policy(permission, principal))[1] == [problem]


def test_policy_level_refusals() -> None:
    doc = {
        "action": "DENY",
        "audit_logging_options": {"audit_condition": "ON_DENY"},
        "policies": {
            "cel": {"permissions": [{"any": True}], "principals": [{"any": True}], "condition": {"id": 1}},
            "empty": {},
        },
    }
    assert compile_rules(doc)[1] == [
        "rules.audit_logging_options: is not supported; RBAC decisions are in the access log",
        'rules.policies["cel"].condition: is not supported: meshproxy does not evaluate CEL expressions',
        'rules.policies["empty"].permissions: needs at least one permission (use any: true for every request)',
        'rules.policies["empty"].principals: needs at least one principal (use any: true for every caller)',
    ]


def test_tls_principal_compiles_to_canonical_names() -> None:
    config = {
        "@type": TLS_PRINCIPAL_URL,
        "groups": ["x25519", "X25519MLKEM768"],
        "signature_algorithms": ["mldsa65"],
    }
    rules, _ = compile_rules(one_policy({"any": True}, {"custom": {"name": "pq", "typed_config": config}}))
    assert rules is not None
    assert rules.policies[0].principals == (
        TlsPrincipal(frozenset({"X25519", "X25519MLKEM768"}), frozenset({"mldsa65"})),
    )


def test_http_filter_stat_namespaces_follow_envoy() -> None:
    """Relative to the connection manager's ``http.<stat_prefix>.``, which the runtime adds."""
    problems: list[str] = []
    doc = {"rules": {"action": "ALLOW"}, "rules_stat_prefix": "enforced_", "shadow_rules": {"action": "DENY"}}
    result = http_filter(json_format.ParseDict(doc, http_rbac.RBAC()), Ctx("f", problems))
    assert problems == []
    assert result == RbacFilter(Rules("ALLOW", ()), Rules("DENY", ()), "rbac.enforced_", "rbac")


def test_http_filter_refusals() -> None:
    problems: list[str] = []
    doc = {"matcher": {"on_no_match": {"action": {"name": "a"}}}, "track_per_rule_stats": True}
    assert http_filter(json_format.ParseDict(doc, http_rbac.RBAC()), Ctx("f", problems)) is None
    assert problems == [
        "f.matcher: is not supported; use rules",
        "f.track_per_rule_stats: is not supported; meshproxy counts per filter",
    ]


def test_per_route_config_replaces_the_rules_or_turns_the_filter_off() -> None:
    problems: list[str] = []
    off = http_per_route(http_rbac.RBACPerRoute(), Ctx("r", problems))
    assert off == RbacFilter(None, None, "", "")
    doc = {
        "rbac": {
            "rules": {
                "action": "DENY",
                "policies": {"p": {"permissions": [{}], "principals": [{"any": True}]}},
            }
        }
    }
    assert http_per_route(json_format.ParseDict(doc, http_rbac.RBACPerRoute()), Ctx("r", problems)) is None
    assert problems == [
        'r.rbac.rules.policies["p"].permissions[0]: a permission needs one rule (and_rules, or_rules, not_rule, any, header, url_path, ...)'
    ]


def test_network_filter() -> None:
    problems: list[str] = []
    good = {"stat_prefix": "tcp_in", "rules": {"action": "ALLOW"}, "shadow_rules_stat_prefix": "dry_"}
    result = network_filter(json_format.ParseDict(good, network_rbac.RBAC()), Ctx("n", problems))
    assert problems == [] and result == RbacFilter(
        Rules("ALLOW", ()), None, "tcp_in.rbac", "tcp_in.rbac.dry_"
    )
    bad = {"enforcement_type": "CONTINUOUS", "delay_deny": "1s", "shadow_matcher": {}}
    assert network_filter(json_format.ParseDict(bad, network_rbac.RBAC()), Ctx("n", problems)) is None
    assert problems == [
        "n.shadow_matcher: is not supported; use shadow_rules",
        "n.stat_prefix: is required",
        "n.enforcement_type: CONTINUOUS is not supported: meshproxy decides once per connection (ONE_TIME_ON_FIRST_BYTE)",
        "n.delay_deny: is not supported; a denied connection is closed at once",
    ]
