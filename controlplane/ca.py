"""The CA core: authorise a Sign request and issue an X.509-SVID, sans I/O.

Owns the CA's decisions: who may have which identity (a bootstrap token and its `Grant`), which
CSRs it signs, and the lifetime it grants. The certificate profiles and X.509 mechanics belong to
`meshproxy.identity.certs`; keys never reach this module, only CSRs.

The checks, in the order a request meets them (the first failure is the answer):

1. the caller is authenticated (before `Issuer.sign`, by the servicer's `Authenticator`: a
   bootstrap token of the tokens file, or a Kubernetes service-account token) -> else
   UNAUTHENTICATED; what it proved is a `Grant`;
2. the CSR parses, its signature verifies with its own key, the key is ECDSA P-256 or ML-DSA-65;
   its only SAN is one URI SAN holding a workload SPIFFE ID; it asks for no CA:true, no
   certificate- or CRL-signing key usage, no EKU other than serverAuth/clientAuth and no
   extension outside those -> else INVALID_ARGUMENT (a CSR this CA signs for nobody);
3. the ID is in the CA's trust domain and inside the caller's grant -> else PERMISSION_DENIED;
4. ``requested_ttl`` is not negative -> else INVALID_ARGUMENT; unset or zero means the default
   (24 h); anything else is clamped to [min_ttl, max_ttl], and `certs.sign_csr` clamps again to
   the CA certificate's own expiry.

The CSR's subject is not checked and not copied: an SVID's identity is its URI SAN alone.

Must not depend on: grpc, asyncio, files, the clock (``now`` is a parameter).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from controlplane.errors import InvalidRequest, PermissionDenied
from controlplane.tokens import Grant
from meshproxy.errors import IdentityError
from meshproxy.identity import certs
from meshproxy.identity.spiffe import SpiffeId

ALLOWED_EKUS = frozenset({ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH})
# Extensions a CSR may carry (their values are checked below, and never copied into the SVID).
_ALLOWED_EXTENSIONS = (
    x509.SubjectAlternativeName,
    x509.BasicConstraints,
    x509.KeyUsage,
    x509.ExtendedKeyUsage,
    x509.SubjectKeyIdentifier,
)


@dataclass(frozen=True, slots=True)
class CAPolicy:
    """Lifetimes the CA grants. The 24 h default and cap follow issue 3 ("short-lived SVIDs")."""

    default_ttl: timedelta = certs.DEFAULT_SVID_TTL
    max_ttl: timedelta = certs.DEFAULT_SVID_TTL
    # A floor keeps a misconfigured proxy from renewing in a tight loop against the CA.
    min_ttl: timedelta = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Issued:
    """One signed SVID: the chain (leaf first) and the trust bundle, both PEM."""

    spiffe_id: SpiffeId
    certificate: x509.Certificate
    chain_pem: str
    bundle_pem: str

    @property
    def expires_at(self) -> datetime:
        return self.certificate.not_valid_after_utc


class Issuer:
    """The CA's policy over its signing key: `sign` is the one decision it makes."""

    def __init__(self, ca: certs.CertificateAuthority, policy: CAPolicy | None = None) -> None:
        self.ca = ca
        self.policy = policy or CAPolicy()
        # The CA is its own root: chains are the leaf alone, the bundle is the CA certificate.
        self.bundle_pem = certs.certs_to_pem([ca.cert]).decode()

    @property
    def trust_domain(self) -> str:
        return self.ca.trust_domain

    def sign(
        self,
        *,
        grant: Grant,
        csr_pem: str,
        requested_ttl: timedelta | None,
        now: datetime,
    ) -> Issued:
        """Check the request of a caller holding ``grant`` (module docstring, checks 2-4, in
        that order) and issue; `SignRefused` if not."""
        csr, spiffe_id = check_csr(csr_pem)
        self._authorise(grant, spiffe_id)
        ttl = self._lifetime(requested_ttl)
        try:
            cert = certs.sign_csr(self.ca, csr, spiffe_id, now=now, ttl=ttl)
        except IdentityError as exc:  # what check_csr let through and certs still refuses
            raise InvalidRequest(f"csr_pem: {exc}") from None
        return Issued(spiffe_id, cert, certs.certs_to_pem([cert]).decode(), self.bundle_pem)

    def _lifetime(self, requested: timedelta | None) -> timedelta:
        if not requested:  # unset (None) or zero
            return self.policy.default_ttl
        if requested < timedelta(0):
            raise InvalidRequest(
                f"requested_ttl: {requested} is negative; leave it unset for the default "
                f"({self.policy.default_ttl})"
            )
        return min(max(requested, self.policy.min_ttl), self.policy.max_ttl)

    def _authorise(self, grant: Grant, spiffe_id: SpiffeId) -> None:
        if spiffe_id.trust_domain != self.trust_domain:
            raise PermissionDenied(f"{spiffe_id}: this CA issues for trust domain {self.trust_domain!r} only")
        if not grant.allows(spiffe_id):
            raise PermissionDenied(f"{spiffe_id}: {grant.credential} grants {grant} only")


def check_csr(csr_pem: str) -> tuple[x509.CertificateSigningRequest, SpiffeId]:
    """The CSR and the SPIFFE ID it asks for, if this CA would sign it for someone."""
    try:
        csr = certs.load_csr_pem(csr_pem.encode())
        if not csr.is_signature_valid:
            raise InvalidRequest("csr_pem: the CSR's signature does not verify with its own public key")
        certs.algorithm_of(csr.public_key())
        extensions = list(csr.extensions)
    except IdentityError as exc:
        raise InvalidRequest(f"csr_pem: {exc}") from None
    except ValueError as exc:  # malformed or duplicated extensions
        raise InvalidRequest(f"csr_pem: unreadable extensions ({exc})") from None
    uris: list[str] = []
    for ext in extensions:
        _check_extension(ext, uris)
    if len(uris) != 1:
        raise InvalidRequest(
            f"csr_pem: {len(uris)} URI SANs; the CSR must carry exactly one, the SPIFFE ID to issue"
        )
    try:
        spiffe_id = SpiffeId.parse(uris[0])
    except IdentityError as exc:
        raise InvalidRequest(f"csr_pem: the URI SAN is not a SPIFFE ID: {exc}") from None
    if not spiffe_id.path:
        raise InvalidRequest(f"csr_pem: {spiffe_id} names a trust domain; an SVID needs a workload path")
    return csr, spiffe_id


def _check_extension(ext: x509.Extension[x509.ExtensionType], uris: list[str]) -> None:
    value = ext.value
    if not isinstance(value, _ALLOWED_EXTENSIONS):
        raise InvalidRequest(
            f"csr_pem: extension {_oid_name(ext.oid)} is not one this CA issues; remove it from the CSR"
        )
    if isinstance(value, x509.SubjectAlternativeName):
        for general_name in value:
            if not isinstance(general_name, x509.UniformResourceIdentifier):
                raise InvalidRequest(
                    f"csr_pem: subjectAltName {type(general_name).__name__} {general_name.value!r} is not "
                    "allowed: an SVID carries one URI SAN, the SPIFFE ID, and nothing else"
                )
            uris.append(general_name.value)
    elif isinstance(value, x509.BasicConstraints) and value.ca:
        raise InvalidRequest("csr_pem: the CSR asks for CA:true; this CA issues leaf SVIDs only")
    elif isinstance(value, x509.KeyUsage) and (value.key_cert_sign or value.crl_sign):
        raise InvalidRequest(
            "csr_pem: the CSR asks for keyCertSign or cRLSign key usage; SVIDs cannot sign certificates"
        )
    elif isinstance(value, x509.ExtendedKeyUsage):
        extra = [_oid_name(oid) for oid in value if oid not in ALLOWED_EKUS]
        if extra:
            raise InvalidRequest(
                f"csr_pem: extended key usage {', '.join(extra)} is not issued; SVIDs are for "
                "serverAuth and clientAuth only"
            )


def _oid_name(oid: x509.ObjectIdentifier) -> str:
    name = getattr(oid, "_name", "Unknown OID")
    return oid.dotted_string if name == "Unknown OID" else f"{name} ({oid.dotted_string})"
