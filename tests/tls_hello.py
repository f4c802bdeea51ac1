"""The cleartext part of a TLS 1.3 handshake, parsed by hand from the bytes that crossed.

Owns reading the first handshake message from a stream of TLS records and parsing a ClientHello
(SNI, supported groups, key shares) or a ServerHello / HelloRetryRequest (selected group, cipher
suite), RFC 8446 4.1.2-4.1.4 and 4.2.8. This is evidence an observer on the wire has, for TLS
stacks that cannot say what they negotiated (grpcio's BoringSSL) and for captures between pods.
Must not depend on any TLS library: the parse is on raw bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

X25519MLKEM768 = 0x11EC
X25519 = 0x001D
GROUP_NAMES = {X25519MLKEM768: "X25519MLKEM768", X25519: "x25519", 0x0017: "secp256r1", 0x0018: "secp384r1"}
# A HelloRetryRequest is a ServerHello with this random (RFC 8446 4.1.3).
HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()

Flow = tuple[str, int, str, int]  # source address, source port, destination address, destination port


@dataclass
class Hello:
    """One hello: ``client`` (ClientHello) or ``server`` (ServerHello)."""

    flow: Flow
    kind: str
    sni: str = ""
    groups: list[int] = field(default_factory=list)  # client: supported_groups
    key_shares: list[int] = field(default_factory=list)  # client: the groups it sent shares for
    selected: int | None = None  # server: the key_share group it chose
    cipher: int | None = None  # server: the cipher suite it chose
    retry: bool = False  # server: a HelloRetryRequest


NO_FLOW: Flow = ("", 0, "", 0)


def first_handshake_message(stream: bytes) -> bytes | None:
    """The first handshake message carried by the leading TLS records of ``stream``; None while
    it is incomplete. Raises ValueError when the stream does not start with a handshake record."""
    body = bytearray()
    offset = 0
    if stream[:1] and stream[0] != 22:
        raise ValueError(f"the first record is of type {stream[0]}, not a handshake")
    while offset + 5 <= len(stream) and stream[offset] == 22:
        length = int.from_bytes(stream[offset + 3 : offset + 5], "big")
        if offset + 5 + length > len(stream):
            return None
        body += stream[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if len(body) >= 4 and len(body) >= 4 + int.from_bytes(body[1:4], "big"):
            return bytes(body[: 4 + int.from_bytes(body[1:4], "big")])
    return None


def parse_hello(message: bytes, flow: Flow = NO_FLOW) -> Hello:
    """The ClientHello or ServerHello in ``message``; ValueError for anything else."""
    if len(message) < 38 or message[0] not in (1, 2):
        raise ValueError(f"handshake message of type {message[:1].hex() or 'none'}, not a hello")
    reader = _Reader(message[4:])
    reader.take(2)  # legacy_version
    random = reader.take(32)
    reader.vector(1)  # legacy_session_id
    if message[0] == 1:
        reader.vector(2)  # cipher_suites
        reader.vector(1)  # legacy_compression_methods
        hello = Hello(flow, "client")
    else:
        hello = Hello(flow, "server", cipher=reader.u16(), retry=random == HRR_RANDOM)
        reader.take(1)  # legacy_compression_method
    extensions = _Reader(reader.vector(2))
    while extensions.left():
        kind, data = extensions.u16(), _Reader(extensions.vector(2))
        if kind == 0 and hello.kind == "client":  # server_name
            names = _Reader(data.vector(2))
            while names.left():
                name_type, name = names.take(1)[0], names.vector(2)
                if name_type == 0:
                    hello.sni = name.decode("ascii", "replace")
        elif kind == 10 and hello.kind == "client":  # supported_groups
            groups = _Reader(data.vector(2))
            hello.groups = [groups.u16() for _ in range(groups.left() // 2)]
        elif kind == 51:  # key_share
            if hello.kind == "client":
                shares = _Reader(data.vector(2))
                while shares.left():
                    hello.key_shares.append(shares.u16())
                    shares.vector(2)
            else:
                hello.selected = data.u16()
    return hello


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def left(self) -> int:
        return len(self.data) - self.at

    def take(self, n: int) -> bytes:
        if n > self.left():
            raise ValueError("truncated TLS hello")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def vector(self, size: int) -> bytes:
        return self.take(int.from_bytes(self.take(size), "big"))
