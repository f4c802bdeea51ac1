"""The RBAC engine's truth tables: each leaf kind against the facts it reads, the three actions,
the policy reported, and meshproxy's TLS principal; configurations written as Envoy's proto
JSON and compiled by ``compile_rbac`` (the path a bootstrap takes)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from envoy.config.rbac.v3 import rbac_pb2
from google.protobuf import json_format
from unit.tls.tls_fixtures import Pki, spiffe_id

from meshproxy.config.compile_common import Ctx
from meshproxy.config.compile_rbac import TLS_PRINCIPAL_URL, rules_of
from meshproxy.rbac.engine import Engine, Facts
from meshproxy.tls.engine import Negotiated

HYBRID, CLASSICAL = "X25519MLKEM768", "X25519"


@pytest.fixture(scope="module")
def leaf_cert() -> x509.Certificate:
    return x509.load_pem_x509_certificate(Pki().leaf("web").chain)


def negotiated(
    cert: x509.Certificate | None, *, group: str = HYBRID, signature: str = "mldsa65", sni: str = ""
) -> Negotiated:
    chain = (cert,) if cert else ()
    uris = (spiffe_id("web"),) if cert else ()
    return Negotiated("TLSv1.3", group, "TLS_AES_256_GCM_SHA384", signature, None, chain, uris, sni, False)


def engine(policies: dict[str, Any], action: str = "ALLOW") -> Engine:
    problems: list[str] = []
    rules = rules_of(
        json_format.ParseDict({"action": action, "policies": policies}, rbac_pb2.RBAC()), Ctx("r", problems)
    )
    assert problems == [] and rules is not None
    return Engine(rules)


def permit(permission: dict[str, Any], principal: dict[str, Any] | None = None) -> Engine:
    return engine({"p": {"permissions": [permission], "principals": [principal or {"any": True}]}})


def request(tls: Negotiated | None = None, **fields: Any) -> Facts:
    base: dict[str, Any] = {
        "peer": "10.0.0.7",
        "local": "10.0.0.1",
        "local_port": 8080,
        "tls": tls,
        "headers": [(b"x-team", b"blue"), (b"x-team", b"red")],
        "method": b"GET",
        "target": b"/api/v1/items?x=1",
        "authority": b"shop.local",
    }
    return Facts(**(base | fields))


def connection(**fields: Any) -> Facts:
    """Network-filter facts: no request."""
    return Facts(**({"peer": "10.0.0.7", "local": "10.0.0.1", "local_port": 8080, "tls": None} | fields))


@pytest.mark.parametrize(
    ("permission", "facts", "expected"),
    [
        ({"any": True}, request(), True),
        ({"destination_port": 8080}, request(), True),
        ({"destination_port": 8081}, request(), False),
        ({"destination_port_range": {"start": 8000, "end": 8080}}, request(), False),  # end excluded
        ({"destination_port_range": {"start": 8000, "end": 8081}}, request(), True),
        ({"destination_ip": {"address_prefix": "10.0.0.0", "prefix_len": 24}}, request(), True),
        ({"destination_ip": {"address_prefix": "10.0.1.0", "prefix_len": 24}}, request(), False),
        ({"destination_ip": {"address_prefix": "10.0.0.1"}}, request(), True),  # no prefix_len: the host
        ({"destination_ip": {"address_prefix": "::", "prefix_len": 0}}, request(), False),  # another family
        (
            {"destination_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}},
            request(local="::ffff:10.0.0.1"),
            True,
        ),
        ({"url_path": {"path": {"prefix": "/api/"}}}, request(), True),
        ({"url_path": {"path": {"exact": "/api/v1/items"}}}, request(), True),  # the query is not part of it
        ({"url_path": {"path": {"exact": "/API/V1/ITEMS", "ignore_case": True}}}, request(), True),
        ({"url_path": {"path": {"safe_regex": {"regex": "/api/v[0-9]+/.*"}}}}, request(), True),
        ({"url_path": {"path": {"prefix": "/admin"}}}, request(), False),
        ({"url_path": {"path": {"prefix": "/"}}}, connection(), False),  # no request on a network filter
        ({"header": {"name": ":method", "string_match": {"exact": "GET"}}}, request(), True),
        ({"header": {"name": ":method", "string_match": {"exact": "POST"}}}, request(), False),
        ({"header": {"name": ":path", "string_match": {"exact": "/api/v1/items?x=1"}}}, request(), True),
        ({"header": {"name": ":authority", "string_match": {"exact": "shop.local"}}}, request(), True),
        ({"header": {"name": "x-team", "string_match": {"exact": "blue,red"}}}, request(), True),  # joined
        ({"header": {"name": "x-missing", "present_match": True}}, request(), False),
        ({"header": {"name": "x-missing", "present_match": True, "invert_match": True}}, request(), True),
        ({"header": {"name": "x-team", "present_match": True}}, connection(), False),
        ({"requested_server_name": {"exact": ""}}, request(), True),  # plaintext: the empty name
        ({"requested_server_name": {"suffix": ".local"}}, request(negotiated(None, sni="shop.local")), True),
        ({"requested_server_name": {"suffix": ".local"}}, request(), False),
        ({"and_rules": {"rules": []}}, request(), True),
        ({"or_rules": {"rules": []}}, request(), False),
        ({"not_rule": {"destination_port": 8080}}, request(), False),
        (
            {
                "and_rules": {
                    "rules": [{"destination_port": 8080}, {"url_path": {"path": {"prefix": "/api"}}}]
                }
            },
            request(),
            True,
        ),
        (
            {"and_rules": {"rules": [{"destination_port": 8080}, {"url_path": {"path": {"prefix": "/x"}}}]}},
            request(),
            False,
        ),
        (
            {"or_rules": {"rules": [{"destination_port": 1}, {"url_path": {"path": {"prefix": "/api"}}}]}},
            request(),
            True,
        ),
    ],
)
def test_permissions(permission: dict[str, Any], facts: Facts, expected: bool) -> None:
    assert permit(permission).allows(facts) == (expected, "p" if expected else None)


def test_principals(leaf_cert: x509.Certificate) -> None:
    mtls = negotiated(leaf_cert)
    rows: list[tuple[dict[str, Any], Facts, bool]] = [
        ({"authenticated": {}}, request(mtls), True),
        ({"authenticated": {}}, request(negotiated(None)), False),  # TLS without a client certificate
        ({"authenticated": {}}, request(), False),
        ({"authenticated": {"principal_name": {"exact": spiffe_id("web")}}}, request(mtls), True),
        ({"authenticated": {"principal_name": {"exact": spiffe_id("api")}}}, request(mtls), False),
        (
            {"authenticated": {"principal_name": {"prefix": "spiffe://mesh.local/ns/default/"}}},
            request(mtls),
            True,
        ),
        (
            {"authenticated": {"principal_name": {"exact": "CN=web"}}},
            request(mtls),
            True,
        ),  # the subject, last
        ({"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 24}}, request(), True),
        ({"source_ip": {"address_prefix": "10.0.0.0", "prefix_len": 24}}, request(), True),
        (
            {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 24}},
            request(peer="192.0.2.1"),
            False,
        ),
        (
            {"remote_ip": {"address_prefix": "192.0.2.0", "prefix_len": 24}},
            request(xff=b"203.0.113.5, 192.0.2.9"),
            True,
        ),
        ({"remote_ip": {"address_prefix": "192.0.2.0", "prefix_len": 24}}, request(), False),
        (
            {"remote_ip": {"address_prefix": "192.0.2.0", "prefix_len": 24}},
            request(xff=b"192.0.2.9, 10.9.9.9"),
            False,
        ),
        (
            {"remote_ip": {"address_prefix": "10.0.0.7"}},
            request(xff=b"192.0.2.9, unknown"),
            True,
        ),  # not an IP: the peer
        (
            {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}},
            request(peer="not an address"),
            False,
        ),
        ({"header": {"name": "x-team", "string_match": {"contains": "red"}}}, request(), True),
        ({"not_id": {"authenticated": {}}}, request(), True),
        (
            {
                "or_ids": {
                    "ids": [{"authenticated": {}}, {"direct_remote_ip": {"address_prefix": "10.0.0.7"}}]
                }
            },
            request(),
            True,
        ),
        (
            {
                "and_ids": {
                    "ids": [{"authenticated": {}}, {"direct_remote_ip": {"address_prefix": "10.0.0.7"}}]
                }
            },
            request(),
            False,
        ),
    ]
    for principal, facts, expected in rows:
        assert permit({"any": True}, principal).allows(facts)[0] == expected, principal


def tls_principal(groups: list[str] = [], schemes: list[str] = []) -> dict[str, Any]:  # noqa: B006 - read only
    config = {"@type": TLS_PRINCIPAL_URL, "groups": groups, "signature_algorithms": schemes}
    return {"custom": {"name": "meshproxy.rbac.tls_principal", "typed_config": config}}


@pytest.mark.parametrize(
    ("groups", "schemes", "tls", "expected"),
    [
        ([HYBRID], [], {"group": HYBRID}, True),
        ([HYBRID], [], {"group": CLASSICAL}, False),
        (["x25519"], [], {"group": CLASSICAL}, True),  # OpenSSL's spelling is Envoy's X25519
        ([], ["mldsa44", "mldsa65", "mldsa87"], {"signature": "mldsa65"}, True),
        ([], ["mldsa65"], {"signature": "ecdsa_secp256r1_sha256"}, False),
        ([], ["mldsa65"], {"signature": ""}, False),  # a resumed session: no signature to show
        ([HYBRID], ["mldsa65"], {"group": HYBRID, "signature": "mldsa65"}, True),
        ([HYBRID], ["mldsa65"], {"group": CLASSICAL, "signature": "mldsa65"}, False),
        ([], [], {}, True),  # any TLS connection
        ([], [], None, False),  # plaintext
    ],
)
def test_tls_principal(
    leaf_cert: x509.Certificate,
    groups: list[str],
    schemes: list[str],
    tls: dict[str, Any] | None,
    expected: bool,
) -> None:
    facts = request(None if tls is None else negotiated(leaf_cert, **tls))
    assert permit({"any": True}, tls_principal(groups, schemes)).allows(facts)[0] == expected


def test_tls_principal_on_a_network_filter(leaf_cert: x509.Certificate) -> None:
    """The principal reads the connection only, so it decides on a network filter too."""
    only_hybrid = permit({"any": True}, tls_principal([HYBRID]))
    assert only_hybrid.allows(connection(tls=negotiated(leaf_cert)))[0]
    assert not only_hybrid.allows(connection(tls=negotiated(leaf_cert, group=CLASSICAL)))[0]


def test_actions_and_the_policy_reported() -> None:
    policies = {
        "b-admin": {
            "permissions": [{"url_path": {"path": {"prefix": "/admin"}}}],
            "principals": [{"any": True}],
        },
        "a-api": {"permissions": [{"url_path": {"path": {"prefix": "/api"}}}], "principals": [{"any": True}]},
        "c-all": {"permissions": [{"any": True}], "principals": [{"any": True}]},
    }
    api, admin = request(), request(target=b"/admin/x")
    allow = engine(policies)
    assert allow.allows(api) == (True, "a-api")  # the first name that matches, not the first written
    assert allow.allows(admin) == (True, "b-admin")
    deny = engine({k: v for k, v in policies.items() if k != "c-all"}, "DENY")
    assert deny.allows(api) == (False, "a-api")
    assert deny.allows(request(target=b"/other")) == (True, None)
    log = engine(policies, "LOG")
    assert log.allows(admin) == (True, "b-admin")
    assert engine({}, "ALLOW").allows(api) == (False, None)  # ALLOW with no policy denies everything
    assert engine({}, "DENY").allows(api) == (True, None)


def test_a_policy_needs_a_permission_and_a_principal() -> None:
    policies = {
        "p": {
            "permissions": [{"url_path": {"path": {"prefix": "/api"}}}],
            "principals": [{"authenticated": {}}],
        }
    }
    assert engine(policies).allows(request()) == (False, None)  # the permission holds, the principal not


def test_header_index_is_built_once_and_only_when_read() -> None:
    facts = request()
    assert permit({"destination_port": 8080}).allows(facts)[0]
    assert facts._index is None  # no header leaf was reached
    header = permit({"header": {"name": "x-team", "present_match": True}})
    assert header.allows(facts)[0]
    index = facts._index
    assert header.allows(facts)[0] and facts._index is index
