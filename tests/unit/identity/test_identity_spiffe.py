"""SpiffeId: the parsing table, the Kubernetes form, reading it from certificates, matchers."""

from __future__ import annotations

import re

import pytest
from certs import make_ca, make_leaf

from meshproxy.errors import IdentityError
from meshproxy.identity.spiffe import (
    MAX_ID_LENGTH,
    ExactMatch,
    PrefixMatch,
    SpiffeId,
    TrustDomainMatch,
)

VALID = [
    ("spiffe://example.org", "example.org", ""),
    ("spiffe://example.org/ns/default/sa/web", "example.org", "/ns/default/sa/web"),
    ("spiffe://a.b-c_d.123/p", "a.b-c_d.123", "/p"),
    ("spiffe://td/Mixed.Case_Path-1/x", "td", "/Mixed.Case_Path-1/x"),
    ("spiffe://td/..a/.b/c..", "td", "/..a/.b/c.."),  # dots inside a segment are fine
    ("spiffe://td/9eebccd2-12bf-40a6-b262-65fe0487d453", "td", "/9eebccd2-12bf-40a6-b262-65fe0487d453"),
    ("spiffe://" + "a" * 255 + "/x", "a" * 255, "/x"),
]

INVALID = [
    ("", "is empty"),
    ("example.org/x", "must start with 'spiffe://'"),
    ("http://example.org/x", "must start with 'spiffe://'"),
    ("spiffe:/example.org/x", "must start with 'spiffe://'"),
    (" spiffe://example.org/x", "must start with 'spiffe://'"),
    ("SPIFFE://example.org/x", "scheme must be lower-case"),
    ("Spiffe://example.org/x", "scheme must be lower-case"),
    ("spiffe://", "trust domain is missing"),
    ("spiffe:///x", "trust domain is missing"),
    ("spiffe://Example.org/x", "trust domain must be lower-case"),
    ("spiffe://exa mple.org", "may hold only a-z"),
    ("spiffe://ex%41mple.org/x", "may hold only a-z"),
    ("spiffe://exämple.org/x", "may hold only a-z"),
    ("spiffe://example.org:8443/x", "must not have a port"),
    ("spiffe://example.org:/x", "must not have a port"),
    ("spiffe://user@example.org/x", "must not have userinfo"),
    ("spiffe://user:pw@example.org/x", "must not have userinfo"),
    ("spiffe://example.org/x?y=1", "must not have a query"),
    ("spiffe://example.org?", "must not have a query"),
    ("spiffe://example.org/x#frag", "must not have a fragment"),
    ("spiffe://example.org/", "must not end with '/'"),
    ("spiffe://example.org/x/", "must not end with '/'"),
    ("spiffe://example.org//x", "empty segment"),
    ("spiffe://example.org/x//y", "empty segment"),
    ("spiffe://example.org/./x", "'.' segment"),
    ("spiffe://example.org/x/..", "'..' segment"),
    ("spiffe://example.org/x%20y", "path segments may hold only"),
    ("spiffe://example.org/ü", "path segments may hold only"),
    ("spiffe://example.org/a+b", "path segments may hold only"),
    ("spiffe://" + "a" * 256 + "/x", "more than 255"),
    ("spiffe://td/" + "x" * (MAX_ID_LENGTH - len("spiffe://td/") + 1), "longer than the 2048 bytes"),
]


@pytest.mark.parametrize(("value", "trust_domain", "path"), VALID)
def test_parse_valid(value: str, trust_domain: str, path: str) -> None:
    sid = SpiffeId.parse(value)
    assert (sid.trust_domain, sid.path) == (trust_domain, path)
    assert str(sid) == value
    assert SpiffeId.parse(str(sid)) == sid


@pytest.mark.parametrize(("value", "message"), INVALID)
def test_parse_invalid(value: str, message: str) -> None:
    with pytest.raises(IdentityError, match=re.escape(message)) as exc:
        SpiffeId.parse(value)
    if value:
        assert repr(value[:40])[:-1] in str(exc.value)  # the message names the value


def test_length_limit_is_inclusive() -> None:
    prefix = "spiffe://td/"
    value = prefix + "x" * (MAX_ID_LENGTH - len(prefix))
    assert len(SpiffeId.parse(value).__str__()) == MAX_ID_LENGTH


def test_direct_construction_is_validated() -> None:
    with pytest.raises(IdentityError, match="lower-case"):
        SpiffeId("Example.org")
    with pytest.raises(IdentityError, match="must start with '/'"):
        SpiffeId("example.org", "x")
    with pytest.raises(IdentityError, match="more than the 2048"):
        SpiffeId("td", "/" + "x" * MAX_ID_LENGTH)


def test_frozen_and_hashable() -> None:
    sid = SpiffeId.parse("spiffe://td/a")
    with pytest.raises(AttributeError):
        sid.path = "/b"  # type: ignore[misc]
    assert {sid, SpiffeId("td", "/a")} == {sid}


def test_kubernetes_form() -> None:
    sid = SpiffeId.for_service_account("cluster.local", "default", "web")
    assert str(sid) == "spiffe://cluster.local/ns/default/sa/web"
    assert (sid.namespace, sid.service_account) == ("default", "web")
    assert sid.segments == ("ns", "default", "sa", "web")


@pytest.mark.parametrize(
    "value",
    ["spiffe://td", "spiffe://td/ns/a", "spiffe://td/ns/a/sa/b/extra", "spiffe://td/sa/a/ns/b"],
)
def test_kubernetes_accessors_are_none_for_other_forms(value: str) -> None:
    sid = SpiffeId.parse(value)
    assert sid.namespace is None
    assert sid.service_account is None


@pytest.mark.parametrize(
    ("namespace", "service_account", "message"),
    [
        ("a/b", "web", "namespace 'a/b'"),
        ("", "web", "namespace ''"),
        ("default", "", "service account ''"),
        ("default", "we b", "path segments may hold only"),
    ],
)
def test_kubernetes_form_refuses_bad_names(namespace: str, service_account: str, message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        SpiffeId.for_service_account("cluster.local", namespace, service_account)


def test_trust_domain_id() -> None:
    sid = SpiffeId.for_trust_domain("example.org")
    assert str(sid) == "spiffe://example.org"
    assert sid.segments == ()


# ---- from_certificate ------------------------------------------------------------------------


def test_from_certificate_svid() -> None:
    leaf = make_leaf(spiffe_id="spiffe://cluster.local/ns/prod/sa/api")
    assert SpiffeId.from_certificate(leaf.cert) == SpiffeId.parse("spiffe://cluster.local/ns/prod/sa/api")


def test_from_certificate_ca_has_the_trust_domain_id() -> None:
    assert SpiffeId.from_certificate(make_ca().cert) == SpiffeId("cluster.local")


@pytest.mark.parametrize(
    ("uri_sans", "message"),
    [
        ([], "no subjectAltName extension"),
        (
            ["spiffe://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/c/sa/d"],
            "2 URI SANs .*exactly one",
        ),
        (["spiffe://cluster.local/ns/a/sa/b", "https://example.org/"], "2 URI SANs"),
        (["https://example.org/ns/a/sa/b"], "URI SAN is not a SPIFFE ID: .*must start with 'spiffe://'"),
        (["spiffe://Cluster.local/ns/a"], "URI SAN is not a SPIFFE ID: .*lower-case"),
        (["spiffe://cluster.local"], "leaf SVID's SPIFFE ID spiffe://cluster.local must have a path"),
    ],
)
def test_from_certificate_refusals(uri_sans: list[str], message: str) -> None:
    leaf = make_leaf(uri_sans=uri_sans)
    with pytest.raises(IdentityError, match=message) as exc:
        SpiffeId.from_certificate(leaf.cert)
    assert f"serial {leaf.cert.serial_number:x}" in str(exc.value)  # names the certificate


# ---- matchers --------------------------------------------------------------------------------

PEER = SpiffeId.parse("spiffe://cluster.local/ns/prod/sa/api")


@pytest.mark.parametrize(
    ("matcher", "expected"),
    [
        (ExactMatch(PEER), True),
        (ExactMatch(SpiffeId.parse("spiffe://cluster.local/ns/prod/sa/ap")), False),
        (ExactMatch(SpiffeId.parse("spiffe://other.local/ns/prod/sa/api")), False),
        (PrefixMatch(SpiffeId.parse("spiffe://cluster.local/ns/prod")), True),
        (PrefixMatch(SpiffeId.parse("spiffe://cluster.local/ns/prod/sa/api")), True),
        (PrefixMatch(SpiffeId.parse("spiffe://cluster.local")), True),
        (PrefixMatch(SpiffeId.parse("spiffe://cluster.local/ns/pro")), False),  # whole segments only
        (PrefixMatch(SpiffeId.parse("spiffe://cluster.local/ns/prod/sa/api/x")), False),
        (PrefixMatch(SpiffeId.parse("spiffe://other.local/ns/prod")), False),
        (TrustDomainMatch("cluster.local"), True),
        (TrustDomainMatch("cluster.loca"), False),
    ],
)
def test_matchers(matcher: ExactMatch | PrefixMatch | TrustDomainMatch, expected: bool) -> None:
    assert matcher.matches(PEER) is expected


def test_trust_domain_matcher_validates() -> None:
    with pytest.raises(IdentityError, match="lower-case"):
        TrustDomainMatch("Cluster.local")
