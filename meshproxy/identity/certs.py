"""Certificate tooling: keys, the CA, CSRs, X.509-SVIDs, trust bundles, PEM.

Owns the certificate profiles of the mesh, in one place:

- **CA** (signing certificate, X.509-SVID 3.2): self-signed; subject ``O=<trust domain>``;
  URI SAN ``spiffe://<trust domain>`` (a signing certificate SHOULD be an SVID, with no path);
  ``CA:true`` (critical); key usage keyCertSign + cRLSign (critical); subject key identifier.
- **SVID** (leaf, X.509-SVID 3.1/4): empty subject, so the one URI SAN is critical (RFC 5280
  4.1.2.6); ``CA:false`` (critical); key usage digitalSignature only (critical: keyEncipherment
  is an RSA key-transport bit, and meshproxy issues no RSA keys); EKU serverAuth + clientAuth;
  subject key identifier and the CA's key identifier; lifetime 24 h by default, clamped to the
  CA's own expiry, backdated by `BACKDATE` for clock skew between proxies (an SVID from a CA
  younger than that starts before its CA does: path validation at those instants fails on the
  CA either way, so verify a fresh SVID at its middle, not at its start).
- **Serving SVID** (the controlplane's TLS certificate): the SVID profile plus DNS and IP SANs
  (X.509-SVID 2 allows other SAN types beside the one URI SAN), so a gRPC client that checks
  the host name it dialled accepts it.

Keys are ECDSA P-256 (the default, interoperable) or ML-DSA-65 (FIPS 204, through the OpenSSL
that the ``cryptography`` wheel bundles; the high-level builders accept it, with ``None`` as the
hash). The proxy generates its key and a CSR (`generate_csr`); the CA only sees the CSR
(`sign_csr`): keys never leave the proxy.

Time is the parameter ``now`` (an aware UTC datetime); nothing here reads the clock.
Must not depend on: asyncio, sockets, files (PEM helpers take and return bytes), the TLS engine.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeAlias, cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshproxy.errors import IdentityError
from meshproxy.identity.spiffe import SpiffeId, describe_certificate, is_ca

DEFAULT_SVID_TTL = timedelta(hours=24)
DEFAULT_CA_TTL = timedelta(days=365)
# SVIDs start this long before `now`, so a peer whose clock is slightly behind the CA's does not
# refuse a freshly rotated certificate as not yet valid.
BACKDATE = timedelta(minutes=1)

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | mldsa.MLDSA65PrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | mldsa.MLDSA65PublicKey


class Algorithm(enum.Enum):
    """The signature algorithms meshproxy issues and accepts for its own keys."""

    ECDSA_P256 = "ecdsa-p256"
    ML_DSA_65 = "ml-dsa-65"


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A signing certificate with its key and the trust domain it issues for."""

    cert: x509.Certificate
    key: PrivateKey
    trust_domain: str

    @property
    def algorithm(self) -> Algorithm:
        return algorithm_of(self.key)


def generate_key(alg: Algorithm = Algorithm.ECDSA_P256) -> PrivateKey:
    if alg is Algorithm.ML_DSA_65:
        try:
            return mldsa.MLDSA65PrivateKey.generate()
        except UnsupportedAlgorithm as exc:
            raise IdentityError(f"ML-DSA-65 is not available from this OpenSSL: {exc}") from None
    return ec.generate_private_key(ec.SECP256R1())


def algorithm_of(key: PrivateKey | PublicKey | object) -> Algorithm:
    """The `Algorithm` of a key; any other key type or curve is an `IdentityError`."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return Algorithm.ECDSA_P256
        raise IdentityError(f"unsupported EC curve {key.curve.name}: meshproxy uses P-256 (secp256r1)")
    if isinstance(key, mldsa.MLDSA65PrivateKey | mldsa.MLDSA65PublicKey):
        return Algorithm.ML_DSA_65
    raise IdentityError(f"unsupported key type {type(key).__name__}: meshproxy uses ECDSA P-256 or ML-DSA-65")


def generate_ca(
    trust_domain: str,
    *,
    now: datetime,
    alg: Algorithm = Algorithm.ECDSA_P256,
    ttl: timedelta = DEFAULT_CA_TTL,
) -> CertificateAuthority:
    """A new self-signed root for ``trust_domain``, valid from ``now`` for ``ttl``."""
    spiffe_id = SpiffeId.for_trust_domain(trust_domain)
    key = generate_key(alg)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, "meshproxy CA"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(_spiffe_san(spiffe_id), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, _hash_for(key))
    )
    return CertificateAuthority(cert, key, trust_domain)


def load_ca(cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
    """A CA from PEM: the certificate must be a signing SVID and the key must be its key."""
    certs = load_certs_pem(cert_pem, "CA certificate")
    cert = certs[0]
    key = load_key_pem(key_pem, "CA key")
    if not is_ca(cert):
        raise IdentityError(f"{describe_certificate(cert)}: not a CA certificate (basicConstraints CA:false)")
    if not key_matches(cert, key):
        raise IdentityError(f"{describe_certificate(cert)}: the CA key is not the certificate's key")
    return CertificateAuthority(cert, key, SpiffeId.from_certificate(cert).trust_domain)


def generate_csr(
    spiffe_id: SpiffeId, alg: Algorithm = Algorithm.ECDSA_P256
) -> tuple[PrivateKey, x509.CertificateSigningRequest]:
    """What the proxy does before asking the CA: a new key and a CSR for ``spiffe_id``."""
    key = generate_key(alg)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(_spiffe_san(spiffe_id), critical=True)
        .sign(key, _hash_for(key))
    )
    return key, csr


def sign_csr(
    ca: CertificateAuthority,
    csr: x509.CertificateSigningRequest,
    spiffe_id: SpiffeId,
    *,
    now: datetime,
    ttl: timedelta = DEFAULT_SVID_TTL,
) -> x509.Certificate:
    """Issue an SVID for ``csr``; ``spiffe_id`` is the identity the CA authenticated.

    The CSR must be self-consistent (its signature verifies with its key), carry exactly
    ``spiffe_id`` as its one URI SAN, and hold a supported key; ``spiffe_id`` must be a workload
    in the CA's trust domain. Anything else the CSR asks for (subject, other SANs, extensions)
    is ignored: the profile is fixed here.
    """
    if not csr.is_signature_valid:
        raise IdentityError(f"CSR for {spiffe_id}: its signature does not verify with its own key")
    public_key = csr.public_key()
    algorithm_of(public_key)
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IdentityError(
            f"CSR for {spiffe_id}: no subjectAltName; it must request one SPIFFE URI SAN"
        ) from None
    requested = san.get_values_for_type(x509.UniformResourceIdentifier)
    if requested != [str(spiffe_id)]:
        raise IdentityError(
            f"CSR for {spiffe_id}: requests URI SANs {requested}; the caller is authenticated as {spiffe_id}"
        )
    if spiffe_id.trust_domain != ca.trust_domain:
        raise IdentityError(f"CSR for {spiffe_id}: this CA issues for trust domain {ca.trust_domain!r} only")
    not_after = min(now + ttl, ca.cert.not_valid_after_utc)
    if not_after <= now:
        raise IdentityError(f"CA {describe_certificate(ca.cert)} expired at {ca.cert.not_valid_after_utc}")
    not_before = now - BACKDATE
    return issue_svid(ca, cast(PublicKey, public_key), spiffe_id, not_before=not_before, not_after=not_after)


def issue_svid(
    ca: CertificateAuthority,
    public_key: PublicKey,
    spiffe_id: SpiffeId,
    *,
    not_before: datetime,
    not_after: datetime,
    hosts: Sequence[x509.DNSName | x509.IPAddress] = (),
) -> x509.Certificate:
    """The leaf SVID profile (module docstring), with an explicit validity window; ``hosts``
    adds DNS and IP SANs (the serving profile)."""
    algorithm_of(public_key)
    if not spiffe_id.path:
        raise IdentityError(f"{spiffe_id}: a leaf SVID's SPIFFE ID must have a path (X.509-SVID 3.1)")
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(_spiffe_san(spiffe_id, hosts), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca.key, _hash_for(ca.key))
    )


def expires_at(cert: x509.Certificate) -> datetime:
    return cert.not_valid_after_utc


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def verify_svid(
    chain: Sequence[x509.Certificate], bundle: Sequence[x509.Certificate], *, now: datetime
) -> SpiffeId:
    """Path-validate ``chain`` (leaf first) against ``bundle`` at ``now``; return the leaf's ID.

    Uses ``cryptography.x509.verification`` with its client-auth policy (RFC 5280 path building,
    validity, basic constraints, key usage, EKU clientAuth), then the X.509-SVID leaf rules.
    """
    if not chain:
        raise IdentityError("empty certificate chain")
    if not bundle:
        raise IdentityError("empty trust bundle")
    verifier = verification.PolicyBuilder().store(verification.Store(list(bundle))).time(now)
    try:
        verifier.build_client_verifier().verify(chain[0], list(chain[1:]))
    except verification.VerificationError as exc:
        raise IdentityError(
            f"{describe_certificate(chain[0])}: does not verify against the trust bundle: {exc}"
        ) from None
    return SpiffeId.from_certificate(chain[0])


def load_bundle(data: bytes, what: str = "trust bundle") -> tuple[x509.Certificate, ...]:
    """A trust bundle from PEM: one or more CA certificates, duplicates dropped, order kept."""
    certs = load_certs_pem(data, what)
    for cert in certs:
        if not is_ca(cert):
            raise IdentityError(f"{what}: {describe_certificate(cert)} is not a CA certificate")
    return merge_bundles(certs)


def merge_bundles(*bundles: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    """The union of bundles (old and new roots during a CA rotation), first occurrence kept."""
    seen: set[bytes] = set()
    merged: list[x509.Certificate] = []
    for bundle in bundles:
        for cert in bundle:
            digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
            if digest not in seen:
                seen.add(digest)
                merged.append(cert)
    return tuple(merged)


def certs_to_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def key_to_pem(key: PrivateKey) -> bytes:
    """PKCS#8, unencrypted (the file is protected by its mode, as Kubernetes secret volumes are)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def csr_to_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def load_certs_pem(data: bytes, what: str = "certificate chain") -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise IdentityError(f"{what}: no certificates (no '-----BEGIN CERTIFICATE-----' line)")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise IdentityError(f"{what}: not PEM certificates ({exc})") from None


def load_key_pem(data: bytes, what: str = "private key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise IdentityError(f"{what}: not an unencrypted PEM private key ({exc})") from None
    algorithm_of(key)
    return cast(PrivateKey, key)


def load_csr_pem(data: bytes) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise IdentityError(f"CSR: not a PEM certificate signing request ({exc})") from None


def _spiffe_san(
    spiffe_id: SpiffeId, hosts: Sequence[x509.DNSName | x509.IPAddress] = ()
) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id)), *hosts])


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    # ML-DSA signs the message itself (pure mode); the builders take None as its "hash".
    return None if isinstance(key, mldsa.MLDSA65PrivateKey) else hashes.SHA256()
