"""The X25519MLKEM768 adapter: wire format, the ClientHello each policy sends, the version guard."""

from __future__ import annotations

import aioquic
import pytest
from aioquic import tls
from aioquic.buffer import Buffer
from cryptography.hazmat.primitives.asymmetric import x25519
from unit.tls.tls_fixtures import Leaf, Pki

from meshproxy.quic import pqtls
from meshproxy.quic.handshake import PqContext
from meshproxy.tls import OFF, PREFERRED, REQUIRED
from meshproxy.tls.policy import PqPolicy


def exchanged() -> tuple[pqtls.HybridKeyShare, pqtls.HybridKeyShare, bytes, bytes, bytes, bytes]:
    client, server = pqtls.HybridKeyShare(), pqtls.HybridKeyShare()
    client_share = client.share()
    server_secret = server.exchange(None, pqtls.HybridPeerShare(client_share))
    server_share = server.share()
    client_secret = client.exchange(None, pqtls.HybridPeerShare(server_share))
    return client, server, client_share, server_share, client_secret, server_secret


def test_shares_and_secret_follow_the_draft_layout() -> None:
    """Client: ek(1184) ‖ X25519(32); server: ct(1088) ‖ X25519(32); secret: ML-KEM ‖ X25519."""
    client, server, client_share, server_share, client_secret, server_secret = exchanged()
    assert (len(client_share), len(server_share)) == (1216, 1120)
    assert client_secret == server_secret and len(client_secret) == 64
    x25519_secret = client._x25519.exchange(x25519.X25519PublicKey.from_public_bytes(server_share[-32:]))
    assert client_secret[32:] == x25519_secret
    assert server._x25519.public_key().public_bytes_raw() == server_share[1088:]
    assert client._mlkem is not None
    assert client_secret[:32] == client._mlkem.decapsulate(server_share[:1088])
    assert client._mlkem.public_key().public_bytes_raw() == client_share[:1184]


@pytest.mark.parametrize(("size", "role"), [(1215, "client"), (1217, "client"), (1119, "server")])
def test_a_share_of_the_wrong_length_is_refused(size: int, role: str) -> None:
    mine = pqtls.HybridKeyShare()
    if role == "server":  # a client that has sent its share expects a server share
        mine.share()
    with pytest.raises(ValueError, match=f"X25519MLKEM768 {role} share is {size} bytes"):
        mine.exchange(None, pqtls.HybridPeerShare(b"\x01" * size))


def test_a_malformed_encapsulation_key_is_refused() -> None:
    """FIPS 203 §7.2: the encapsulation key's coefficients must be below q."""
    with pytest.raises(ValueError):
        pqtls.HybridKeyShare().exchange(None, pqtls.HybridPeerShare(b"\xff" * 1216))


def client_hello(pki: Pki, leaf: Leaf, policy: PqPolicy) -> tls.ClientHello:
    context = tls.Context(is_client=True, server_name="server.mesh.local")
    context.__class__ = PqContext  # as PqQuicConnection does
    assert isinstance(context, PqContext)
    context.adopt(pki.config(leaf, server_side=False, pq_policy=policy))
    sent = {epoch: Buffer(capacity=4096) for epoch in tls.Epoch}
    context.handle_message(b"", sent)
    return tls.pull_client_hello(Buffer(data=sent[tls.Epoch.INITIAL].data))


@pytest.mark.parametrize(
    ("policy", "shares"),
    [
        (PREFERRED, [(0x11EC, 1216), (0x001D, 32)]),
        (REQUIRED, [(0x11EC, 1216)]),
        (OFF, [(0x001D, 32), (0x0017, 65)]),
    ],
)
def test_client_hello_offers_the_policy_groups(
    pki: Pki, client_leaf: Leaf, policy: PqPolicy, shares: list[tuple[int, int]]
) -> None:
    hello = client_hello(pki, client_leaf, policy)
    assert hello.key_share is not None
    assert [(group, len(data)) for group, data in hello.key_share] == shares
    assert hello.supported_groups == [group for group, _ in shares]


def test_install_refuses_an_aioquic_it_does_not_know(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls, "GROUP_TO_CURVE", {k: v for k, v in tls.GROUP_TO_CURVE.items() if k != 0x11EC})
    monkeypatch.setattr(aioquic, "__version__", "1.9.1")
    with pytest.raises(
        pqtls.AioquicVersionError, match=r"aioquic 1.9.1 is installed: install aioquic==1.7.2"
    ):
        pqtls.install()
    monkeypatch.setattr(aioquic, "__version__", pqtls.AIOQUIC_VERSION)
    monkeypatch.delattr(tls, "encode_public_key")
    with pytest.raises(pqtls.AioquicVersionError, match=r"aioquic.tls has no encode_public_key"):
        pqtls.install()


def test_install_leaves_the_classical_groups_to_aioquic() -> None:
    key = x25519.X25519PrivateKey.generate().public_key()
    group, data = tls.encode_public_key(key)
    assert group == tls.Group.X25519
    assert isinstance(tls.decode_public_key((group, data)), x25519.X25519PublicKey)
    assert pqtls.X25519MLKEM768 in tls.GROUP_TO_CURVE
