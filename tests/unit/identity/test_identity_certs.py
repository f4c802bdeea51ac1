"""Certificate tooling: CA and SVID profiles, CSR → SVID for both algorithms, bundles, PEM."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from certs import TRUST_DOMAIN, make_ca, make_leaf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID

from meshproxy.errors import IdentityError
from meshproxy.identity.certs import (
    BACKDATE,
    DEFAULT_SVID_TTL,
    Algorithm,
    algorithm_of,
    certs_to_pem,
    csr_to_pem,
    expires_at,
    generate_ca,
    generate_csr,
    key_matches,
    key_to_pem,
    load_bundle,
    load_ca,
    load_csr_pem,
    load_key_pem,
    merge_bundles,
    sign_csr,
    verify_svid,
)
from meshproxy.identity.spiffe import SpiffeId

# Certificates carry whole seconds; a `now` with microseconds would not round-trip.
NOW = datetime.now(UTC).replace(microsecond=0)
WEB = SpiffeId.for_service_account(TRUST_DOMAIN, "default", "web")
ALGORITHMS = list(Algorithm)
SIGNATURE_OID = {
    Algorithm.ECDSA_P256: SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    Algorithm.ML_DSA_65: SignatureAlgorithmOID.ML_DSA_65,
}


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_csr_to_svid_round_trip(alg: Algorithm) -> None:
    ca = make_ca(alg).ca
    key, csr = generate_csr(WEB, alg)
    assert algorithm_of(key) is alg
    received = load_csr_pem(csr_to_pem(csr))  # as it travels to the CA
    assert received.is_signature_valid
    svid = sign_csr(ca, received, WEB, now=NOW)
    assert svid.signature_algorithm_oid == SIGNATURE_OID[alg]
    assert key_matches(svid, key)
    assert verify_svid([svid], [ca.cert], now=NOW) == WEB
    svid.verify_directly_issued_by(ca.cert)


@pytest.mark.parametrize(("ca_alg", "leaf_alg"), [(a, b) for a in ALGORITHMS for b in ALGORITHMS if a != b])
def test_mixed_algorithms(ca_alg: Algorithm, leaf_alg: Algorithm) -> None:
    ca = make_ca(ca_alg).ca
    _, csr = generate_csr(WEB, leaf_alg)
    svid = sign_csr(ca, csr, WEB, now=NOW)
    assert algorithm_of(svid.public_key()) is leaf_alg
    assert svid.signature_algorithm_oid == SIGNATURE_OID[ca_alg]
    assert verify_svid([svid], [ca.cert], now=NOW) == WEB


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_svid_profile(alg: Algorithm) -> None:
    ca = make_ca(alg).ca
    _, csr = generate_csr(WEB, alg)
    svid = sign_csr(ca, csr, WEB, now=NOW)

    assert svid.subject == x509.Name([])
    assert svid.issuer == ca.cert.subject
    san = ext(svid, x509.SubjectAlternativeName)
    assert san.critical  # empty subject: RFC 5280 4.1.2.6
    assert list(san.value) == [x509.UniformResourceIdentifier(str(WEB))]  # URI SAN only

    bc = ext(svid, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False

    ku = ext(svid, x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not (ku.value.key_encipherment or ku.value.key_agreement)
    assert not (ku.value.key_cert_sign or ku.value.crl_sign)

    eku = ext(svid, x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]

    ca_ski = ext(ca.cert, x509.SubjectKeyIdentifier).value.digest
    assert ext(svid, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski
    ski = ext(svid, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(svid.public_key())  # type: ignore[arg-type]
    assert svid.serial_number > 0


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_ca_profile(alg: Algorithm) -> None:
    ca = generate_ca("example.org", now=NOW, alg=alg)
    cert = ca.cert
    assert ca.algorithm is alg and ca.trust_domain == "example.org"
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    assert cert.signature_algorithm_oid == SIGNATURE_OID[alg]
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    assert SpiffeId.from_certificate(cert) == SpiffeId("example.org")  # a signing SVID, no path
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + timedelta(days=365)


def test_validity_period() -> None:
    ca = make_ca().ca
    _, csr = generate_csr(WEB)
    svid = sign_csr(ca, csr, WEB, now=NOW)
    assert svid.not_valid_before_utc == NOW - BACKDATE
    assert expires_at(svid) == NOW + DEFAULT_SVID_TTL

    short = sign_csr(ca, csr, WEB, now=NOW, ttl=timedelta(minutes=10))
    assert expires_at(short) == NOW + timedelta(minutes=10)


def test_svid_never_outlives_its_ca() -> None:
    ca = generate_ca(TRUST_DOMAIN, now=NOW, ttl=timedelta(hours=2))
    _, csr = generate_csr(WEB)
    svid = sign_csr(ca, csr, WEB, now=NOW + timedelta(hours=1))
    assert expires_at(svid) == ca.cert.not_valid_after_utc
    with pytest.raises(IdentityError, match="expired"):
        sign_csr(ca, csr, WEB, now=NOW + timedelta(hours=3))


def test_sign_csr_refuses_another_identity() -> None:
    _, csr = generate_csr(SpiffeId.for_service_account(TRUST_DOMAIN, "kube-system", "admin"))
    with pytest.raises(IdentityError, match=r"requests URI SANs .*kube-system.*authenticated as"):
        sign_csr(make_ca().ca, csr, WEB, now=NOW)


def test_sign_csr_refuses_another_trust_domain() -> None:
    other = SpiffeId.for_service_account("other.local", "default", "web")
    _, csr = generate_csr(other)
    with pytest.raises(IdentityError, match=r"trust domain 'cluster\.local' only"):
        sign_csr(make_ca().ca, csr, other, now=NOW)


def test_sign_csr_refuses_a_csr_without_san() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    with pytest.raises(IdentityError, match="no subjectAltName"):
        sign_csr(make_ca().ca, csr, WEB, now=NOW)


def test_sign_csr_refuses_other_key_types() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(WEB))])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(san, True)
        .sign(key, None)
    )
    with pytest.raises(IdentityError, match="unsupported key type Ed25519"):
        sign_csr(make_ca().ca, csr, WEB, now=NOW)


def test_sign_csr_refuses_a_forged_csr() -> None:
    # A CSR whose signature does not match its key: whoever sent it does not prove the key.
    _, csr = generate_csr(WEB)
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-10] ^= 0xFF  # inside the ECDSA signature's integers: still parses, no longer verifies
    forged = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(IdentityError, match="signature does not verify"):
        sign_csr(make_ca().ca, forged, WEB, now=NOW)


# ---- verification against a bundle ----------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_chain_verifies_against_bundle(alg: Algorithm) -> None:
    leaf = make_leaf(make_ca(alg))
    bundle = load_bundle(leaf.ca.cert_pem + make_ca(alg, tag="other").cert_pem)
    assert verify_svid([leaf.cert], bundle, now=datetime.now(UTC)) == leaf.spiffe_id


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_wrong_ca_does_not_verify(alg: Algorithm) -> None:
    leaf = make_leaf(make_ca(alg))
    with pytest.raises(IdentityError, match="does not verify against the trust bundle"):
        verify_svid([leaf.cert], [make_ca(alg, tag="other").cert], now=datetime.now(UTC))


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (timedelta(hours=-3), timedelta(hours=-1)),  # expired
        (timedelta(hours=1), timedelta(hours=3)),  # not yet valid
    ],
)
def test_outside_validity_does_not_verify(not_before: timedelta, not_after: timedelta) -> None:
    now = datetime.now(UTC)
    leaf = make_leaf(not_before=now + not_before, not_after=now + not_after)
    with pytest.raises(IdentityError, match="does not verify"):
        verify_svid([leaf.cert], [leaf.ca.cert], now=now)


def test_non_svid_is_refused_after_path_validation() -> None:
    leaf = make_leaf(uri_sans=["spiffe://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/c/sa/d"])
    with pytest.raises(IdentityError, match="exactly one"):
        verify_svid([leaf.cert], [leaf.ca.cert], now=datetime.now(UTC))


def test_verify_svid_needs_chain_and_bundle() -> None:
    leaf = make_leaf()
    with pytest.raises(IdentityError, match="empty certificate chain"):
        verify_svid([], [leaf.ca.cert], now=NOW)
    with pytest.raises(IdentityError, match="empty trust bundle"):
        verify_svid([leaf.cert], [], now=NOW)


# ---- bundles, keys, PEM ----------------------------------------------------------------------


def test_bundle_dedupes_and_keeps_order() -> None:
    a, b = make_ca(), make_ca(tag="other")
    bundle = load_bundle(a.cert_pem + b.cert_pem + a.cert_pem)
    assert bundle == (a.cert, b.cert)
    assert merge_bundles([b.cert], bundle) == (b.cert, a.cert)
    assert load_bundle(certs_to_pem(bundle)) == bundle


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no certificates"),
        (b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", "not PEM certificates"),
    ],
)
def test_bundle_refuses_garbage(data: bytes, message: str) -> None:
    with pytest.raises(IdentityError, match=f"trust bundle: {message}"):
        load_bundle(data)


def test_bundle_refuses_a_leaf() -> None:
    leaf = make_leaf()
    with pytest.raises(IdentityError, match="is not a CA certificate"):
        load_bundle(leaf.ca.cert_pem + leaf.cert_pem)


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_key_pem_round_trip(alg: Algorithm) -> None:
    leaf = make_leaf(make_ca(alg))
    key = load_key_pem(leaf.key_pem)
    assert algorithm_of(key) is alg
    assert key_matches(leaf.cert, key)
    assert not key_matches(leaf.cert, make_leaf(make_ca(alg)).key)


def test_key_pem_refusals() -> None:
    with pytest.raises(IdentityError, match="not an unencrypted PEM private key"):
        load_key_pem(b"garbage")
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(IdentityError, match="unsupported EC curve secp384r1"):
        load_key_pem(key_to_pem(p384))  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_load_ca(alg: Algorithm) -> None:
    issued = make_ca(alg)
    ca = load_ca(issued.cert_pem, issued.key_pem)
    assert (ca.cert, ca.trust_domain, ca.algorithm) == (issued.cert, TRUST_DOMAIN, alg)
    with pytest.raises(IdentityError, match="the CA key is not the certificate's key"):
        load_ca(issued.cert_pem, make_ca(alg, tag="other").key_pem)
    leaf = make_leaf(issued)
    with pytest.raises(IdentityError, match="not a CA certificate"):
        load_ca(leaf.cert_pem, leaf.key_pem)


def test_load_csr_refuses_garbage() -> None:
    with pytest.raises(IdentityError, match="not a PEM certificate signing request"):
        load_csr_pem(b"nope")
