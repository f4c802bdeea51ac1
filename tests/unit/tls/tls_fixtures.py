"""What the TLS tests share: a throwaway PKI, and two engines wired to each other in memory.

``Pki`` makes a CA and leaves with SPIFFE URI SANs (ECDSA P-256, or ML-DSA-65) (the product's certificate
tooling lives in ``meshproxy/identity``; these tests deliberately do not use it). ``Link`` passes
bytes between a server and a client ``TlsEngine`` and records how each side ended. Imported as
``unit.tls.tls_fixtures`` by the unit and integration TLS tests and by the TLS benchmark.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.x509.oid import NameOID

from meshproxy.tls import TlsConfig, TlsContext, TlsError

TRUST_DOMAIN = "mesh.local"


def spiffe_id(name: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/default/sa/{name}"


@dataclass(frozen=True)
class Leaf:
    chain: bytes  # PEM, leaf only
    key: bytes  # PEM, PKCS#8
    uri: str


class Pki:
    """One CA; ``leaf(name)`` issues a certificate for ``spiffe://mesh.local/ns/default/sa/<name>``.

    Keys are ECDSA P-256 (the mesh default) or, with ``mldsa=True``, ML-DSA-65 throughout.
    """

    def __init__(self, name: str = "test mesh CA", *, mldsa: bool = False) -> None:
        self.now = datetime.datetime.now(datetime.UTC)
        self._mldsa = mldsa
        self._key = self._new_key()
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = self._builder(self._name, self._key.public_key(), self.now - datetime.timedelta(hours=1))
        cert = cert.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        self.ca = self._sign(cert)
        self.ca_pem = self.ca.public_bytes(serialization.Encoding.PEM)

    def _new_key(self) -> Any:
        return mldsa.MLDSA65PrivateKey.generate() if self._mldsa else ec.generate_private_key(ec.SECP256R1())

    def _sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self._key, None if self._mldsa else hashes.SHA256())

    def _builder(
        self, subject: x509.Name, key: Any, not_before: datetime.datetime
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + datetime.timedelta(hours=25))
        )

    def leaf(self, name: str, *, expired: bool = False, dns: tuple[str, ...] = ()) -> Leaf:
        """``dns``: DNS SANs beside the SPIFFE URI SAN."""
        key = self._new_key()
        uri = spiffe_id(name)
        start = self.now - datetime.timedelta(days=3 if expired else 0, hours=1)
        cert = self._sign(
            self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key(), start)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), *map(x509.DNSName, dns)]),
                critical=False,
            )
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return Leaf(cert.public_bytes(serialization.Encoding.PEM), pem, uri)

    def config(self, leaf: Leaf | None, *, server_side: bool, **fields: Any) -> TlsConfig:
        """A mesh link config (mTLS, TLS 1.3, PQ required) with ``fields`` overriding."""
        base = TlsConfig(
            server_side=server_side,
            certificate_chain=leaf.chain if leaf else b"",
            private_key=leaf.key if leaf else b"",
            trusted_ca=self.ca_pem,
            require_client_certificate=server_side,
        )
        return replace(base, **fields)


class Link:
    """A server and a client engine and the wire between them (no sockets)."""

    def __init__(self, server: TlsContext, client: TlsContext, **client_kw: Any) -> None:
        self.server = server.engine()
        self.client = client.engine(**client_kw)
        self.errors: dict[str, TlsError] = {}  # by the side that raised it
        self.wire: dict[str, list[bytes]] = {"server": [], "client": []}  # by the side that sent it
        self.received = {"server": b"", "client": b""}  # application data read by each side

    def pump(self) -> Link:
        """Move bytes both ways until neither side has anything to say; read what arrives."""
        if not self.client.handshake_complete:
            self.client.start_handshake()
        moved = True
        while moved:
            moved = False
            for name, src, peer, dst in (
                ("client", self.client, "server", self.server),
                ("server", self.server, "client", self.client),
            ):
                data = bytes(src.data_to_send())
                if not data or peer in self.errors:
                    continue
                self.wire[name].append(data)
                moved = True
                try:
                    dst.receive_data(data)
                    self.received[peer] += dst.read()
                except TlsError as exc:
                    self.errors[peer] = exc
        return self

    @property
    def established(self) -> bool:
        return self.server.handshake_complete and self.client.handshake_complete and not self.errors
