"""The CA core (`controlplane.ca`): issuing, lifetimes, and every refusal with its status code."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from controlplane.ca import CAPolicy, Issuer
from controlplane.errors import InvalidRequest, PermissionDenied, SignRefused, Unauthenticated
from controlplane.tokens import TokenTable, authenticate
from meshproxy.identity import certs
from meshproxy.identity.spiffe import SpiffeId

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TD = "mesh.local"
WEB = "spiffe://mesh.local/ns/default/sa/web"
EXACT = "exact-token-0123456789"
NAMESPACE = "namespace-token-0123456789"
TOKENS = TokenTable.parse(
    f"{EXACT} {WEB}\n{NAMESPACE} spiffe://mesh.local/ns/default/sa/\n", source="tokens", trust_domain=TD
)


@pytest.fixture(scope="module", params=list(certs.Algorithm), ids=lambda a: f"ca-{a.value}")
def issuer(request: pytest.FixtureRequest) -> Issuer:
    return Issuer(certs.generate_ca(TD, now=NOW - timedelta(days=1), alg=request.param))


def csr_pem(
    uris: Sequence[str] = (WEB,),
    *,
    other_names: Sequence[x509.GeneralName] = (),
    key: object | None = None,
    extensions: Sequence[x509.ExtensionType] = (),
) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    names = [x509.UniformResourceIdentifier(u) for u in uris] + list(other_names)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM).decode()  # type: ignore[arg-type]


def sign(issuer: Issuer, pem: str, *, token: str | None = EXACT, ttl: timedelta | None = None) -> object:
    return issuer.sign(
        grant=authenticate(None if token is None else f"Bearer {token}", TOKENS),
        csr_pem=pem,
        requested_ttl=ttl,
        now=NOW,
    )


def refused(issuer: Issuer, pem: str, kind: type[SignRefused], *, token: str | None = EXACT) -> str:
    with pytest.raises(kind) as info:
        sign(issuer, pem, token=token)
    return str(info.value)


@pytest.mark.parametrize("leaf", list(certs.Algorithm), ids=lambda a: f"leaf-{a.value}")
def test_signs_a_csr_into_an_svid_that_verifies_against_the_bundle(
    issuer: Issuer, leaf: certs.Algorithm
) -> None:
    key, csr = certs.generate_csr(SpiffeId.parse(WEB), leaf)
    issued = sign(issuer, certs.csr_to_pem(csr).decode())
    chain = certs.load_certs_pem(issued.chain_pem.encode())
    bundle = certs.load_bundle(issued.bundle_pem.encode())
    assert len(chain) == 1 and bundle == (issuer.ca.cert,)
    assert certs.verify_svid(chain, bundle, now=NOW) == SpiffeId.parse(WEB)
    assert certs.key_matches(chain[0], key)
    assert issued.expires_at == NOW + timedelta(hours=24)


def test_a_namespace_token_grants_every_service_account_below_its_prefix(issuer: Issuer) -> None:
    issued = sign(issuer, csr_pem(["spiffe://mesh.local/ns/default/sa/api"]), token=NAMESPACE)
    assert str(issued.spiffe_id) == "spiffe://mesh.local/ns/default/sa/api"


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        (None, timedelta(hours=24)),
        (timedelta(0), timedelta(hours=24)),
        (timedelta(hours=1), timedelta(hours=1)),
        (timedelta(hours=48), timedelta(hours=24)),
        (timedelta(seconds=1), timedelta(minutes=5)),
    ],
)
def test_lifetime_defaults_to_24h_and_is_clamped(
    issuer: Issuer, requested: timedelta | None, granted: timedelta
) -> None:
    assert sign(issuer, csr_pem(), ttl=requested).expires_at == NOW + granted


def test_a_negative_ttl_is_invalid(issuer: Issuer) -> None:
    with pytest.raises(InvalidRequest, match=r"requested_ttl: .* is negative"):
        sign(issuer, csr_pem(), ttl=timedelta(seconds=-1))


def test_policy_sets_the_cap_and_the_ca_expiry_clamps_further() -> None:
    short_ca = certs.generate_ca(TD, now=NOW - timedelta(hours=1), ttl=timedelta(hours=3))
    generous = Issuer(short_ca, CAPolicy(max_ttl=timedelta(days=7)))
    assert sign(generous, csr_pem(), ttl=timedelta(days=7)).expires_at == short_ca.cert.not_valid_after_utc


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "no bootstrap token: send gRPC metadata 'authorization: Bearer <token>'"),
        ("wrong-token-0123456789", "bootstrap token not recognised"),
    ],
)
def test_a_missing_or_unknown_token_is_unauthenticated(
    issuer: Issuer, token: str | None, message: str
) -> None:
    assert message in refused(issuer, csr_pem(), Unauthenticated, token=token)


@pytest.mark.parametrize("header", [f"Basic {EXACT}", "Bearer", EXACT])
def test_an_authorization_header_that_is_not_bearer_is_unauthenticated(issuer: Issuer, header: str) -> None:
    with pytest.raises(Unauthenticated, match="must be 'Bearer <token>'"):
        issuer.sign(grant=authenticate(header, TOKENS), csr_pem=csr_pem(), requested_ttl=None, now=NOW)


def test_the_token_is_checked_before_the_csr(issuer: Issuer) -> None:
    refused(issuer, "not a csr", Unauthenticated, token="wrong-token-0123456789")


@pytest.mark.parametrize(
    ("uri", "token", "message"),
    [
        ("spiffe://mesh.local/ns/default/sa/api", EXACT, f"the bootstrap token grants {WEB} only"),
        ("spiffe://mesh.local/ns/other/sa/web", NAMESPACE, "grants spiffe://mesh.local/ns/default/sa/ only"),
        ("spiffe://mesh.local/ns/default/sab", NAMESPACE, "grants spiffe://mesh.local/ns/default/sa/ only"),
        ("spiffe://mesh.local/ns/default/sa", NAMESPACE, "grants spiffe://mesh.local/ns/default/sa/ only"),
        ("spiffe://other.domain/ns/default/sa/web", EXACT, "issues for trust domain 'mesh.local' only"),
    ],
)
def test_an_identity_outside_the_token_grant_is_permission_denied(
    issuer: Issuer, uri: str, token: str, message: str
) -> None:
    assert message in refused(issuer, csr_pem([uri]), PermissionDenied, token=token)


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (
            lambda: csr_pem(other_names=[x509.DNSName("web.default.svc")]),
            "DNSName 'web.default.svc' is not allowed",
        ),
        (lambda: csr_pem(other_names=[x509.RFC822Name("a@b.c")]), "RFC822Name 'a@b.c' is not allowed"),
        (lambda: csr_pem([WEB, "spiffe://mesh.local/ns/default/sa/api"]), "2 URI SANs"),
        (lambda: csr_pem([]), "0 URI SANs"),
        (lambda: csr_pem(["https://web.example"]), "the URI SAN is not a SPIFFE ID"),
        (lambda: csr_pem(["spiffe://mesh.local"]), "names a trust domain; an SVID needs a workload path"),
        (lambda: csr_pem(extensions=[x509.BasicConstraints(ca=True, path_length=None)]), "asks for CA:true"),
        (lambda: csr_pem(extensions=[_key_usage(cert_sign=True)]), "keyCertSign or cRLSign"),
        (
            lambda: csr_pem(extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING])]),
            "extended key usage codeSigning (1.3.6.1.5.5.7.3.3) is not issued",
        ),
        (
            lambda: csr_pem(
                extensions=[x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")]
            ),
            "extension 1.3.6.1.4.1.99999.1 is not one this CA issues",
        ),
        (lambda: csr_pem(key=rsa.generate_private_key(65537, 2048)), "unsupported key type"),
        (lambda: csr_pem(key=ec.generate_private_key(ec.SECP384R1())), "unsupported EC curve secp384r1"),
        (lambda: csr_pem(key=ed25519.Ed25519PrivateKey.generate()), "unsupported key type"),
        (
            lambda: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "csr_pem: CSR",
        ),
        (lambda: _tampered(csr_pem()), "signature does not verify"),
    ],
    ids=[
        "dns-san",
        "email-san",
        "two-uris",
        "no-san",
        "https-uri",
        "trust-domain-id",
        "ca-true",
        "cert-sign-usage",
        "code-signing-eku",
        "unknown-extension",
        "rsa",
        "p384",
        "ed25519",
        "garbage",
        "bad-signature",
    ],
)
def test_a_csr_the_ca_signs_for_nobody_is_invalid_argument(issuer: Issuer, pem: object, message: str) -> None:
    assert message in refused(issuer, pem(), InvalidRequest)  # type: ignore[operator]


def test_an_allowed_leaf_profile_in_the_csr_is_accepted_but_not_copied(issuer: Issuer) -> None:
    ku = _key_usage(cert_sign=False)
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    pem = csr_pem(extensions=[x509.BasicConstraints(ca=False, path_length=None), ku, eku])
    leaf = certs.load_certs_pem(sign(issuer, pem).chain_pem.encode())[0]
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize("kind", [Unauthenticated, PermissionDenied, InvalidRequest])
def test_each_refusal_names_a_grpc_status(kind: type[SignRefused]) -> None:
    grpc = pytest.importorskip("grpc")
    assert grpc.StatusCode[kind.code].name == kind.code


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _tampered(pem: str) -> str:
    """The same CSR with one bit of its signature flipped (the signature is the DER's tail)."""
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
