"""Two aioquic connections in memory under meshproxy's TLS policy: the group, evidence, refusals."""

from __future__ import annotations

from typing import Any

import pytest
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.tls import AlertDescription
from sans import san_matchers
from unit.quic.quic_fixtures import Pair, client_connection
from unit.tls.tls_fixtures import Leaf, Pki, spiffe_id

from meshproxy.errors import ConfigError
from meshproxy.quic.handshake import PqQuicConnection, aioquic_groups
from meshproxy.tls import OFF, PREFERRED, REQUIRED
from meshproxy.tls.policy import PqMode, PqPolicy

CRYPTO_ERROR = 0x100  # RFC 9001 §4.8: a TLS alert travels as CONNECTION_CLOSE 0x100 + alert


def pair(
    pki: Pki, server_leaf: Leaf, client_leaf: Leaf | None, *, server: Any = None, client: Any = None
) -> Pair:
    s = pki.config(server_leaf, server_side=True, alpn=("h3",), **(server or {}))
    c = pki.config(client_leaf, server_side=False, alpn=("h3",), sni="server.mesh.local", **(client or {}))
    return Pair(s, client_connection(c)).pump()


def alert(p: Pair, side: str) -> tuple[int, str]:
    """The alert ``side`` received (the other side raised it), and the reason it gave."""
    ended = p.terminated(side)
    assert ended is not None, f"{side} still connected"
    return ended.error_code - CRYPTO_ERROR, ended.reason_phrase


def test_mutual_tls_negotiates_the_hybrid_group(pki: Pki, server_leaf: Leaf, client_leaf: Leaf) -> None:
    p = pair(pki, server_leaf, client_leaf)
    assert p.completed("client") and p.completed("server")
    assert isinstance(p.client, PqQuicConnection) and p.server is not None
    ours, theirs = p.client.negotiated, p.server.negotiated
    assert (ours.version, ours.group, theirs.group) == ("TLSv1.3", "X25519MLKEM768", "X25519MLKEM768")
    assert ours.cipher == theirs.cipher == "TLS_AES_256_GCM_SHA384"
    assert ours.peer_signature == theirs.peer_signature == "ecdsa_secp256r1_sha256"
    assert ours.peer_uris == (spiffe_id("server"),) and theirs.peer_uris == (spiffe_id("client"),)
    assert [c.subject.rfc4514_string() for c in ours.peer_chain] == ["CN=server"]
    assert [c.subject.rfc4514_string() for c in theirs.peer_chain] == ["CN=client"]
    assert ours.server_name == theirs.server_name == "server.mesh.local"
    assert ours.alpn == theirs.alpn == "h3" and not ours.resumed


@pytest.mark.parametrize(
    ("server_policy", "client_policy", "group"),
    [
        (PREFERRED, PREFERRED, "X25519MLKEM768"),
        (REQUIRED, PREFERRED, "X25519MLKEM768"),
        (PREFERRED, REQUIRED, "X25519MLKEM768"),
        (PREFERRED, OFF, "X25519"),
        (OFF, PREFERRED, "X25519"),  # no HelloRetryRequest: works because preferred sends both shares
        (REQUIRED, OFF, None),  # a classical-only peer under required: no key share in common
        (OFF, REQUIRED, None),
    ],
)
def test_group_follows_both_policies(
    pki: Pki,
    server_leaf: Leaf,
    client_leaf: Leaf,
    server_policy: PqPolicy,
    client_policy: PqPolicy,
    group: str | None,
) -> None:
    policies = {"server": {"pq_policy": server_policy}, "client": {"pq_policy": client_policy}}
    p = pair(pki, server_leaf, client_leaf, **policies)
    if group is None:
        assert not p.completed("client") and not p.completed("server")
        code, reason = alert(p, "client")
        assert code == AlertDescription.handshake_failure and "No supported key share" in reason
        return
    assert p.completed("client") and p.completed("server")
    assert p.server is not None and p.server.negotiated.group == group
    assert isinstance(p.client, PqQuicConnection) and p.client.negotiated.group == group


def test_stock_aioquic_client_is_classical_and_refused_under_required(pki: Pki, server_leaf: Leaf) -> None:
    """aioquic as shipped (X25519 and the NIST curves) is a classical-only peer."""
    stock = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name="server.mesh.local")
    stock.load_verify_locations(cadata=pki.ca_pem.decode())
    stock.verify_mode = 0  # its DNS-name check cannot pass on a SPIFFE certificate
    server = {"require_client_certificate": False, "trusted_ca": None, "pq_policy": REQUIRED}
    p = Pair(
        pki.config(server_leaf, server_side=True, alpn=("h3",), **server), QuicConnection(configuration=stock)
    )
    p.pump()
    assert alert(p, "client")[0] == AlertDescription.handshake_failure
    server["pq_policy"] = PREFERRED
    p = Pair(
        pki.config(server_leaf, server_side=True, alpn=("h3",), **server), QuicConnection(configuration=stock)
    )
    p.pump()
    assert p.completed("client") and p.server is not None and p.server.negotiated.group == "X25519"


def test_server_refuses_a_client_without_certificate(pki: Pki, server_leaf: Leaf) -> None:
    p = pair(pki, server_leaf, None)
    assert not p.completed("server")
    code, reason = alert(p, "client")
    assert code == AlertDescription.certificate_required and "require_client_certificate" in reason


def test_server_without_required_certificate_accepts_an_anonymous_client(pki: Pki, server_leaf: Leaf) -> None:
    p = pair(pki, server_leaf, None, server={"require_client_certificate": False})
    assert p.completed("server") and p.server is not None
    assert p.server.negotiated.peer_uris == () and p.server.negotiated.peer_chain == ()


def test_client_refuses_a_server_identity_it_does_not_expect(
    pki: Pki, server_leaf: Leaf, client_leaf: Leaf
) -> None:
    p = pair(
        pki, server_leaf, client_leaf, client={"match_sans": san_matchers(("exact", spiffe_id("payments")))}
    )
    assert not p.completed("client") and not p.completed("server")
    code, reason = alert(p, "server")
    assert code == AlertDescription.bad_certificate
    assert reason == f"peer identity {spiffe_id('server')} not allowed"


def test_server_refuses_a_client_identity_it_does_not_expect(
    pki: Pki, server_leaf: Leaf, client_leaf: Leaf
) -> None:
    p = pair(
        pki, server_leaf, client_leaf, server={"match_sans": san_matchers(("prefix", spiffe_id("front")))}
    )
    assert not p.completed("server")
    code, reason = alert(p, "client")
    assert code == AlertDescription.bad_certificate and spiffe_id("client") in reason


@pytest.mark.parametrize("side", ["client", "server"])
def test_a_certificate_from_another_ca_is_refused(
    pki: Pki, server_leaf: Leaf, client_leaf: Leaf, side: str
) -> None:
    stranger = Pki("another CA").leaf(side)
    p = pair(
        pki, stranger if side == "server" else server_leaf, stranger if side == "client" else client_leaf
    )
    receiver = "client" if side == "client" else "server"  # the stranger is told
    code, reason = alert(p, receiver)
    assert code == AlertDescription.bad_certificate and "unable to get local issuer certificate" in reason


def test_an_expired_server_certificate_is_refused(pki: Pki, client_leaf: Leaf) -> None:
    p = pair(pki, pki.leaf("server", expired=True), client_leaf)
    code, _reason = alert(p, "server")
    assert code == AlertDescription.certificate_expired


def test_groups_outside_aioquic_are_refused_with_the_field() -> None:
    with pytest.raises(ConfigError, match=r"tls_params.ecdh_curves: MLKEM768 not available over QUIC"):
        aioquic_groups(PqPolicy(PqMode.REQUIRED, ("MLKEM768",)))


def test_a_client_that_changes_address_keeps_its_connection(
    pki: Pki, server_leaf: Leaf, client_leaf: Leaf
) -> None:
    """Connection migration is on (RFC 9000 §9): the server validates the new path and moves to it."""
    p = pair(pki, server_leaf, client_leaf)
    assert p.server is not None and p.completed("server")
    p.client_addr = ("10.0.0.9", 50000)  # a NAT rebinding, or the client moved networks
    sid = p.client.get_next_available_stream_id()
    p.client.send_stream_data(sid, b"after the move", end_stream=True)
    p.pump()
    received = [e for e in p.events["server"] if isinstance(e, events.StreamDataReceived)]
    assert b"".join(e.data for e in received) == b"after the move"
    assert p.server._network_paths[0].addr == ("10.0.0.9", 50000)
    assert p.server._network_paths[0].is_validated
    assert p.terminated("server") is None and p.terminated("client") is None
