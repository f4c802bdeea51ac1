"""X25519MLKEM768 in aioquic's TLS 1.3 engine: the one adapter between meshproxy and aioquic's internals.

aioquic (pinned in pyproject.toml) negotiates X25519, X448 and the NIST curves only, and has no
extension point for a key-exchange group. This module adds the hybrid group 0x11EC of
draft-ietf-tls-ecdhe-mlkem through the four module-level names of ``aioquic.tls`` that every key
exchange passes through, and changes nothing for the other groups:

- ``GROUP_TO_CURVE`` learns 0x11EC, so the client's ClientHello loop and the server's key-share
  loop treat it like an elliptic curve (``ec.generate_private_key`` then ``exchange``);
- ``ec`` becomes a view of ``cryptography``'s ``ec`` module whose ``generate_private_key`` returns a
  `HybridKeyShare` for that curve (and cryptography's key for any other);
- ``decode_public_key`` / ``encode_public_key`` read and write the hybrid key-share bytes.

Wire format (draft-ietf-tls-ecdhe-mlkem §3, X25519MLKEM768): the client's share is the ML-KEM-768
encapsulation key (1184 bytes) ‖ an X25519 public key (32), the server's is the ML-KEM ciphertext
(1088) ‖ its X25519 public key, and the shared secret is the ML-KEM shared secret ‖ the X25519
shared secret. ML-KEM (FIPS 203) and X25519 come from ``cryptography``.

aioquic has no HelloRetryRequest: a server picks the first client key share whose group it
supports, and fails with handshake_failure when there is none. So a client under ``preferred``
sends both shares (hybrid first), and under ``required`` only the hybrid one.

`install` runs once, on import; it refuses any aioquic other than `AIOQUIC_VERSION` or one whose
seams have moved, with a message that says what to do, rather than negotiating wrongly.
Must not import asyncio or sockets, nor anything of meshproxy above ``errors``.
"""

from __future__ import annotations

import types
from typing import Any

import aioquic
from aioquic import tls
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519

from meshproxy.errors import MeshproxyError

AIOQUIC_VERSION = "1.7.2"
X25519MLKEM768 = 0x11EC  # IANA TLS Supported Groups registry
MLKEM768_KEY_BYTES = 1184
MLKEM768_CIPHERTEXT_BYTES = 1088
X25519_BYTES = 32
CLIENT_SHARE_BYTES = MLKEM768_KEY_BYTES + X25519_BYTES
SERVER_SHARE_BYTES = MLKEM768_CIPHERTEXT_BYTES + X25519_BYTES

_SEAMS = ("GROUP_TO_CURVE", "decode_public_key", "encode_public_key", "ec")


class AioquicVersionError(MeshproxyError):
    """The installed aioquic is not the one this adapter was written and tested against."""


class HybridCurve:
    """Marks group 0x11EC where aioquic expects an elliptic curve; never reaches OpenSSL."""

    name = "X25519MLKEM768"


class HybridPeerShare:
    """The peer's key-share bytes; their layout depends on our role, so `HybridKeyShare` splits them."""

    __slots__ = ("data",)
    curve = HybridCurve()

    def __init__(self, data: bytes) -> None:
        self.data = data


class HybridOwnShare:
    """What ``public_key()`` returns: our share, read when aioquic encodes it.

    A server encodes its share after ``exchange`` (the ciphertext exists only then), a client
    before; reading late serves both.
    """

    __slots__ = ("owner",)
    curve = HybridCurve()

    def __init__(self, owner: HybridKeyShare) -> None:
        self.owner = owner


class HybridKeyShare:
    """Our side of one X25519MLKEM768 exchange, as client (decapsulates) or server (encapsulates).

    The role shows itself in the order of calls: a client publishes its share first, which makes
    the ML-KEM key pair; a server exchanges first, which makes the ciphertext it then publishes.
    """

    __slots__ = ("_ciphertext", "_mlkem", "_x25519")
    curve = HybridCurve()

    def __init__(self) -> None:
        self._x25519 = x25519.X25519PrivateKey.generate()
        self._mlkem: mlkem.MLKEM768PrivateKey | None = None
        self._ciphertext: bytes | None = None

    def public_key(self) -> HybridOwnShare:
        return HybridOwnShare(self)

    def share(self) -> bytes:
        own = self._x25519.public_key().public_bytes_raw()
        if self._ciphertext is not None:
            return self._ciphertext + own
        if self._mlkem is None:
            self._mlkem = mlkem.MLKEM768PrivateKey.generate()
        return self._mlkem.public_key().public_bytes_raw() + own

    def exchange(self, _algorithm: object, peer: HybridPeerShare) -> bytes:
        """ML-KEM shared secret ‖ X25519 shared secret; ValueError (illegal_parameter) on bad bytes."""
        data = peer.data
        if self._mlkem is not None:
            if len(data) != SERVER_SHARE_BYTES:
                raise ValueError(
                    f"X25519MLKEM768 server share is {len(data)} bytes, not {SERVER_SHARE_BYTES}"
                )
            secret = self._mlkem.decapsulate(data[:MLKEM768_CIPHERTEXT_BYTES])
        else:
            if len(data) != CLIENT_SHARE_BYTES:
                raise ValueError(
                    f"X25519MLKEM768 client share is {len(data)} bytes, not {CLIENT_SHARE_BYTES}"
                )
            key = mlkem.MLKEM768PublicKey.from_public_bytes(data[:MLKEM768_KEY_BYTES])
            secret, self._ciphertext = key.encapsulate()
        peer_x25519 = x25519.X25519PublicKey.from_public_bytes(data[-X25519_BYTES:])
        return secret + self._x25519.exchange(peer_x25519)


# aioquic checks ``isinstance(peer_key, ec.EllipticCurvePublicKey)`` before it looks for our key of
# the same curve; registering the peer's share as one (without inheriting) keeps it out of OpenSSL.
ec.EllipticCurvePublicKey.register(HybridPeerShare)


class _EcWithHybrid(types.ModuleType):
    """``cryptography``'s ``ec`` module, except that the hybrid curve makes a `HybridKeyShare`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(ec, name)

    @staticmethod
    def generate_private_key(curve: object, backend: object = None) -> Any:
        if isinstance(curve, HybridCurve):
            return HybridKeyShare()
        return ec.generate_private_key(curve)  # type: ignore[arg-type]


def install() -> None:
    """Teach aioquic's TLS engine X25519MLKEM768; idempotent; refuses an aioquic it does not know."""
    if X25519MLKEM768 in tls.GROUP_TO_CURVE:
        return
    if aioquic.__version__ != AIOQUIC_VERSION:
        raise AioquicVersionError(
            f"meshproxy's QUIC adds X25519MLKEM768 to aioquic {AIOQUIC_VERSION} through its internals; "
            f"aioquic {aioquic.__version__} is installed: install aioquic=={AIOQUIC_VERSION}"
        )
    missing = [name for name in _SEAMS if not hasattr(tls, name)]
    if missing:
        raise AioquicVersionError(
            f"aioquic.tls has no {', '.join(missing)}: reinstall aioquic=={AIOQUIC_VERSION}"
        )
    decode, encode = tls.decode_public_key, tls.encode_public_key

    def decode_public_key(key_share: tuple[int, bytes]) -> Any:
        if key_share[0] == X25519MLKEM768:
            return HybridPeerShare(key_share[1])
        return decode(key_share)

    def encode_public_key(public_key: Any) -> tuple[int, bytes]:
        if isinstance(public_key, HybridOwnShare):
            return (X25519MLKEM768, public_key.owner.share())
        return encode(public_key)

    tls.decode_public_key = decode_public_key
    tls.encode_public_key = encode_public_key
    tls.ec = _EcWithHybrid("aioquic.tls.ec")
    tls.GROUP_TO_CURVE[X25519MLKEM768] = HybridCurve


install()
