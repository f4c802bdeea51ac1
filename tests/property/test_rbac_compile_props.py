"""Hypothesis over the RBAC compiler: any policy tree Envoy's proto can carry, valid or not,
compiles to rules or to problems that each name a field path under the policy, never to an
exception; and what compiles evaluates without one, on a request and on a bare connection."""

from __future__ import annotations

from typing import Any

from envoy.config.rbac.v3 import rbac_pb2
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from meshproxy.config.compile_common import Ctx
from meshproxy.config.compile_rbac import TLS_PRINCIPAL_URL, rules_of
from meshproxy.rbac.engine import Engine, Facts
from meshproxy.tls.engine import Negotiated

strings = st.sampled_from(["", "/", "/api", "x", "GET", "(", "[a-z]+", "spiffe://mesh.local/ns/a/sa/b"])
matchers = st.one_of(
    st.builds(lambda v: {"exact": v}, strings),
    st.builds(lambda v: {"prefix": v}, strings),
    st.builds(lambda v: {"safe_regex": {"regex": v}}, strings),
    st.just({}),
)
cidrs = st.builds(
    lambda a, n: {"address_prefix": a, "prefix_len": n},
    st.sampled_from(["10.0.0.0", "::", "127.0.0.1", "not-an-ip", ""]),
    st.integers(0, 140),
)
headers = st.builds(
    lambda name, m: {"name": name, "string_match": m} if m else {"name": name, "present_match": True},
    st.sampled_from([":method", ":path", "x-team", ""]),
    matchers,
)
custom = st.builds(
    lambda groups, schemes: {
        "name": "pq",
        "typed_config": {"@type": TLS_PRINCIPAL_URL, "groups": groups, "signature_algorithms": schemes},
    },
    st.lists(st.sampled_from(["X25519MLKEM768", "x25519", "bogus"]), max_size=2),
    st.lists(st.sampled_from(["mldsa65", "ed25519", "bogus"]), max_size=2),
)
permission_leaves = st.one_of(
    st.builds(lambda b: {"any": b}, st.booleans()),
    st.builds(lambda h: {"header": h}, headers),
    st.builds(lambda m: {"url_path": {"path": m}}, matchers),
    st.builds(lambda c: {"destination_ip": c}, cidrs),
    st.builds(lambda p: {"destination_port": p}, st.integers(0, 70000)),
    st.builds(
        lambda a, b: {"destination_port_range": {"start": a, "end": b}},
        st.integers(-5, 70000),
        st.integers(-5, 70000),
    ),
    st.builds(lambda m: {"requested_server_name": m}, matchers),
    st.just({"metadata": {"filter": "f"}}),
    st.just({}),
)
principal_leaves = st.one_of(
    st.builds(lambda b: {"any": b}, st.booleans()),
    st.builds(lambda m: {"authenticated": {"principal_name": m}} if m else {"authenticated": {}}, matchers),
    st.builds(lambda c: {"direct_remote_ip": c}, cidrs),
    st.builds(lambda c: {"remote_ip": c}, cidrs),
    st.builds(lambda h: {"header": h}, headers),
    st.builds(lambda c: {"custom": c}, custom),
    st.just({"filter_state": {"key": "k"}}),
)


def trees(leaves: st.SearchStrategy[dict[str, Any]], and_: str, or_: str, not_: str, key: str) -> Any:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.builds(lambda c: {and_: {key: c}}, st.lists(children, max_size=3)),
            st.builds(lambda c: {or_: {key: c}}, st.lists(children, max_size=3)),
            st.builds(lambda c: {not_: c}, children),
        ),
        max_leaves=8,
    )


permissions = trees(permission_leaves, "and_rules", "or_rules", "not_rule", "rules")
principals = trees(principal_leaves, "and_ids", "or_ids", "not_id", "ids")

NEGOTIATED = Negotiated(
    "TLSv1.3", "X25519", "TLS_AES_128_GCM_SHA256", "ed25519", None, (), (), "a.local", False
)
FACTS = (
    lambda: Facts(
        peer="10.0.0.1",
        local="::1",
        local_port=443,
        tls=NEGOTIATED,
        headers=[(b"x-team", b"a")],
        method=b"GET",
        target=b"/api?q",
        xff=b"bad, 127.0.0.1",
    ),
    lambda: Facts(peer="", local="", local_port=0, tls=None),
)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["ALLOW", "DENY", "LOG"]),
    st.lists(permissions, max_size=2),
    st.lists(principals, max_size=2),
)
def test_any_policy_compiles_or_names_its_problems(action: str, perms: list[Any], princs: list[Any]) -> None:
    doc = {"action": action, "policies": {"p": {"permissions": perms, "principals": princs}}}
    problems: list[str] = []
    rules = rules_of(json_format.ParseDict(doc, rbac_pb2.RBAC()), Ctx("rules", problems))
    assert (rules is None) == bool(problems)
    assert all(p.startswith('rules.policies["p"]') for p in problems), problems
    if rules is not None:
        engine = Engine(rules)
        for facts in FACTS:
            allowed, policy = engine.allows(facts())
            assert policy in (None, "p") and isinstance(allowed, bool)
