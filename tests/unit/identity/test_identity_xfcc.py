"""XFCC: the element for a verified peer, Envoy's quoting, and the five forwarding modes."""

from __future__ import annotations

import hashlib

import pytest
from certs import make_leaf
from cryptography.hazmat.primitives import serialization
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (
    HttpConnectionManager,
)

from meshproxy.identity.spiffe import SpiffeId
from meshproxy.identity.xfcc import ForwardClientCertDetails as Mode
from meshproxy.identity.xfcc import format_element, forward_client_cert, quote_value

LOCAL = SpiffeId.parse("spiffe://cluster.local/ns/prod/sa/server")
PEER = SpiffeId.parse("spiffe://cluster.local/ns/prod/sa/client")


def test_element_for_a_verified_peer() -> None:
    leaf = make_leaf(spiffe_id=PEER)
    der = leaf.cert.public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest()
    assert format_element(LOCAL, der, PEER) == (
        f"By=spiffe://cluster.local/ns/prod/sa/server;Hash={digest};URI=spiffe://cluster.local/ns/prod/sa/client"
    )
    assert len(digest) == 64 and digest == digest.lower()


def test_element_without_ids_follows_envoy() -> None:
    # Envoy leaves By out when the local certificate has no URI SAN, and keeps an empty URI key.
    assert format_element(None, b"der", None) == f"Hash={hashlib.sha256(b'der').hexdigest()};URI="


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("spiffe://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a/sa/b"),
        ("", ""),
        ("a,b", '"a,b"'),
        ("a;b", '"a;b"'),
        ("CN=x", '"CN=x"'),
        ('say "hi"', '"say \\"hi\\""'),
        ('back\\slash"', '"back\\\\slash\\""'),
        ("back\\slash", "back\\slash"),  # nothing to delimit: left bare, as Envoy does
        ('CN=a,OU="b;c"', '"CN=a,OU=\\"b;c\\""'),
    ],
)
def test_quote_value(value: str, quoted: str) -> None:
    assert quote_value(value) == quoted


E = "By=spiffe://td/ns/a/sa/me;Hash=ab;URI=spiffe://td/ns/a/sa/you"
OLD = "By=spiffe://td/ns/x/sa/y;Hash=cd;URI=spiffe://td/ns/x/sa/z"


@pytest.mark.parametrize(
    ("mode", "existing", "element", "expected"),
    [
        # mTLS with a verified peer certificate
        (Mode.SANITIZE, OLD, E, None),
        (Mode.FORWARD_ONLY, OLD, E, OLD),
        (Mode.FORWARD_ONLY, None, E, None),
        (Mode.APPEND_FORWARD, OLD, E, OLD + "," + E),
        (Mode.APPEND_FORWARD, None, E, E),
        (Mode.APPEND_FORWARD, "", E, E),
        (Mode.SANITIZE_SET, OLD, E, E),  # the forged or stale value is dropped
        (Mode.SANITIZE_SET, None, E, E),
        (Mode.ALWAYS_FORWARD_ONLY, OLD, E, OLD),
        # no verified client certificate (plaintext, or TLS without a client certificate)
        (Mode.SANITIZE, OLD, None, None),
        (Mode.FORWARD_ONLY, OLD, None, None),
        (Mode.APPEND_FORWARD, OLD, None, None),
        (Mode.SANITIZE_SET, OLD, None, None),
        (Mode.ALWAYS_FORWARD_ONLY, OLD, None, OLD),
        (Mode.ALWAYS_FORWARD_ONLY, None, None, None),
    ],
)
def test_forward_client_cert(
    mode: Mode, existing: str | None, element: str | None, expected: str | None
) -> None:
    assert forward_client_cert(mode, existing, element) == expected


def test_modes_are_envoys_enum() -> None:
    proto = HttpConnectionManager.ForwardClientCertDetails
    assert {m.name: m.value for m in Mode} == dict(proto.items())
