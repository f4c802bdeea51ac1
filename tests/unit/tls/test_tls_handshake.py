"""Two TLS engines in memory: what a handshake settles, and every refusal with its reason."""

from __future__ import annotations

from typing import Any

import pytest
from sans import san_matchers
from unit.tls.tls_fixtures import Leaf, Link, Pki, spiffe_id

from meshproxy.tls import OFF, PREFERRED, REQUIRED, TlsContext, TlsVersion

HANDSHAKE_FAILURE = b"\x15\x03\x03\x00\x02\x02\x28"  # plaintext fatal alert record, handshake_failure


def link(
    pki: Pki, server_leaf: Leaf | None, client_leaf: Leaf | None, *, server: Any = None, client: Any = None
) -> Link:
    """Handshake a server and a client config (``server``/``client``: field overrides)."""
    s = TlsContext(pki.config(server_leaf, server_side=True, **(server or {})))
    c = TlsContext(pki.config(client_leaf, server_side=False, **(client or {})))
    return Link(s, c, server_hostname="server.mesh.local").pump()


def test_mutual_tls_negotiates_the_hybrid_group(pki: Pki, server_leaf: Leaf, client_leaf: Leaf) -> None:
    done = link(pki, server_leaf, client_leaf)
    assert done.established
    ours, theirs = done.client.negotiated, done.server.negotiated
    assert ours is not None and theirs is not None
    assert (ours.version, ours.group, theirs.group) == ("TLSv1.3", "X25519MLKEM768", "X25519MLKEM768")
    assert ours.cipher == theirs.cipher and ours.cipher.startswith("TLS_")
    assert ours.peer_signature == theirs.peer_signature == "ecdsa_secp256r1_sha256"
    assert ours.peer_uris == (spiffe_id("server"),) and theirs.peer_uris == (spiffe_id("client"),)
    assert [c.subject.rfc4514_string() for c in ours.peer_chain] == ["CN=server"]
    assert [c.subject.rfc4514_string() for c in theirs.peer_chain] == ["CN=client"]
    assert ours.server_name == theirs.server_name == "server.mesh.local"
    assert not ours.resumed and ours.alpn is None


@pytest.mark.parametrize(
    ("server_policy", "client_policy", "group"),
    [
        (PREFERRED, PREFERRED, "X25519MLKEM768"),
        (REQUIRED, PREFERRED, "X25519MLKEM768"),
        (PREFERRED, REQUIRED, "X25519MLKEM768"),
        (PREFERRED, OFF, "X25519"),
        (OFF, PREFERRED, "X25519"),
    ],
)
def test_group_follows_both_policies(
    pki: Pki, server_leaf: Leaf, client_leaf: Leaf, server_policy: Any, client_policy: Any, group: str
) -> None:
    done = link(
        pki,
        server_leaf,
        client_leaf,
        server={"pq_policy": server_policy},
        client={"pq_policy": client_policy},
    )
    assert done.established
    assert done.client.negotiated and done.client.negotiated.group == group
    assert done.server.negotiated and done.server.negotiated.group == group


def test_required_server_refuses_a_classical_client_with_an_alert(
    pki: Pki, server_leaf: Leaf, client_leaf: Leaf
) -> None:
    done = link(pki, server_leaf, client_leaf, client={"pq_policy": OFF})
    assert (
        done.errors["server"].reason == "peer offered no post-quantum group (policy requires X25519MLKEM768)"
    )
    assert done.wire["server"] == [HANDSHAKE_FAILURE]
    assert (done.errors["server"].code, done.errors["client"].code) == (
        "no_pq_group",
        "peer_handshake_failure",
    )
    assert done.errors["client"].by_peer and done.errors["client"].alert == "handshake_failure"


def test_required_client_aborts_against_a_classical_server(
    pki: Pki, server_leaf: Leaf, client_leaf: Leaf
) -> None:
    done = link(pki, server_leaf, client_leaf, server={"pq_policy": OFF})
    refused = done.errors["client"]
    assert refused.reason.startswith("peer accepts no post-quantum group")
    assert "X25519MLKEM768" in refused.reason and refused.alert == "handshake_failure"
    assert (refused.code, done.errors["server"].code) == ("no_pq_group", "no_shared_group")
    assert (
        done.errors["server"].reason
        == "no key exchange group in common with the peer (we accept X25519:P-256)"
    )


def test_unknown_ca_refused_by_the_client(pki: Pki, server_leaf: Leaf, client_leaf: Leaf) -> None:
    stranger = Pki("another CA")
    done = link(pki, stranger.leaf("server"), client_leaf, server={"trusted_ca": pki.ca_pem})
    assert done.errors["client"].reason == "certificate signed by an unknown CA"
    assert done.errors["server"].reason == "peer rejected our certificate (unknown_ca)"
    assert (done.errors["client"].code, done.errors["server"].code) == ("unknown_ca", "peer_unknown_ca")


def test_unknown_ca_refused_by_the_server(pki: Pki, server_leaf: Leaf) -> None:
    stranger = Pki("another CA")
    done = link(pki, server_leaf, stranger.leaf("client"), client={"trusted_ca": pki.ca_pem})
    assert done.errors["server"].reason == "certificate signed by an unknown CA"
    # TLS 1.3: the client's handshake is over before the server judges its certificate, so
    # the refusal reaches the client as an alert in place of the first application data.
    assert done.errors["client"].reason == "peer rejected our certificate (unknown_ca)"


def test_expired_certificate(pki: Pki, client_leaf: Leaf) -> None:
    done = link(pki, pki.leaf("server", expired=True), client_leaf)
    assert (done.errors["client"].reason, done.errors["client"].code) == (
        "expired certificate",
        "certificate_expired",
    )
    assert done.errors["server"].alert == "certificate_expired"


def test_missing_client_certificate(pki: Pki, server_leaf: Leaf) -> None:
    done = link(pki, server_leaf, None)
    assert (done.errors["server"].reason, done.errors["server"].code) == (
        "no client certificate",
        "no_client_certificate",
    )
    assert done.errors["client"].alert == "certificate_required"
    assert done.errors["client"].reason.startswith("peer requires a client certificate")


def test_server_identity_not_allowed(pki: Pki, server_leaf: Leaf, client_leaf: Leaf) -> None:
    wanted = san_matchers(("exact", spiffe_id("payments")))
    done = link(pki, server_leaf, client_leaf, client={"match_sans": wanted})
    assert done.errors["client"].reason == f"peer identity {spiffe_id('server')} not allowed"
    assert done.errors["client"].code == "identity_not_allowed"
    assert done.errors["server"].reason == "peer rejected our certificate (bad_certificate)"


def test_client_identity_checked_by_prefix(pki: Pki, server_leaf: Leaf, client_leaf: Leaf) -> None:
    allowed = link(
        pki, server_leaf, client_leaf, server={"match_sans": san_matchers(("prefix", spiffe_id("cli")))}
    )
    assert allowed.established
    refused = link(
        pki, server_leaf, client_leaf, server={"match_sans": san_matchers(("prefix", spiffe_id("web")))}
    )
    assert refused.errors["server"].reason == f"peer identity {spiffe_id('client')} not allowed"
    assert refused.errors["client"].alert == "bad_certificate"


def test_alpn_server_preference_and_no_overlap(pki: Pki, server_leaf: Leaf, client_leaf: Leaf) -> None:
    both = link(
        pki,
        server_leaf,
        client_leaf,
        server={"alpn": ("h2", "http/1.1")},
        client={"alpn": ("http/1.1", "h2")},
    )
    assert both.client.negotiated and both.client.negotiated.alpn == "h2"
    assert both.server.negotiated and both.server.negotiated.alpn == "h2"
    none = link(pki, server_leaf, client_leaf, server={"alpn": ("h2",)}, client={"alpn": ("http/1.1",)})
    assert none.established and none.client.negotiated and none.client.negotiated.alpn is None


def test_tls12_only_peer_refused_by_a_tls13_server(pki: Pki, server_leaf: Leaf, client_leaf: Leaf) -> None:
    old = {"min_version": TlsVersion.TLSv1_2, "max_version": TlsVersion.TLSv1_2, "pq_policy": OFF}
    done = link(pki, server_leaf, client_leaf, client=old)
    assert done.errors["server"].reason == "no TLS version in common with the peer"
    assert done.errors["client"].alert == "protocol_version"


def test_plaintext_is_not_a_handshake(pki: Pki, server_leaf: Leaf) -> None:
    server = TlsContext(pki.config(server_leaf, server_side=True)).engine()
    with pytest.raises(Exception, match=r"peer sent plaintext \(an HTTP request\), not TLS"):
        server.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_eof_during_the_handshake(pki: Pki, server_leaf: Leaf) -> None:
    server = TlsContext(pki.config(server_leaf, server_side=True)).engine()
    with pytest.raises(Exception, match="peer closed the connection during the TLS handshake"):
        server.receive_eof()


def test_ml_dsa_65_certificates_end_to_end() -> None:
    pki = Pki("ML-DSA CA", mldsa=True)
    done = link(pki, pki.leaf("server"), pki.leaf("client"))
    assert done.established
    for side in (done.client, done.server):
        assert side.negotiated is not None
        assert (side.negotiated.group, side.negotiated.peer_signature) == ("X25519MLKEM768", "mldsa65")


def test_dns_san_matchers_accept_a_wildcard_certificate_for_one_label(pki: Pki, client_leaf: Leaf) -> None:
    server = pki.leaf("server", dns=("*.svc.example",))
    wanted = san_matchers(("exact", "db.svc.example"), san_type="DNS")
    assert link(pki, server, client_leaf, client={"match_sans": wanted}).established
    deeper = san_matchers(("exact", "a.db.svc.example"), san_type="DNS")
    refused = link(pki, server, client_leaf, client={"match_sans": deeper})
    assert refused.errors["client"].code == "identity_not_allowed"
    assert refused.errors["client"].reason == f"peer identity {spiffe_id('server')} not allowed"
