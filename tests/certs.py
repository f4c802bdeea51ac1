"""Test certificates for the whole suite: CAs made once per session, leaves on demand.

Import it as ``from certs import make_ca, make_leaf``. Why that works under ``.venv/bin/pytest``
(and ``python -m pytest``) from the repository root: pytest's default ``prepend`` import mode puts
the first directory above a conftest.py without an ``__init__.py`` on ``sys.path``; for
``tests/conftest.py`` that is ``tests/`` itself, which is also why ``tests/integration`` imports
as the package ``integration``. ``from tests.certs import ...`` would not work under a bare
``pytest``: the repository root is not on ``sys.path`` there. (So: no other module named
``certs`` in a test directory without ``__init__.py``.)

Everything is built with the product's own profile (`meshproxy.identity.certs`), so a test
certificate is what the CA would issue, except where a test asks otherwise: ``not_before`` /
``not_after`` for expired or not-yet-valid leaves, ``uri_sans`` for leaves that are not SVIDs
(none, two, or a non-SPIFFE URI), ``tag`` for a second, unrelated CA ("wrong CA").

Times are real (``datetime.now(UTC)``): TLS engines check validity against the real clock.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

from meshproxy.identity.certs import (
    Algorithm,
    CertificateAuthority,
    PrivateKey,
    certs_to_pem,
    generate_ca,
    generate_key,
    issue_svid,
    key_to_pem,
)
from meshproxy.identity.spiffe import SpiffeId

TRUST_DOMAIN = "cluster.local"
DEFAULT_ID = SpiffeId.for_service_account(TRUST_DOMAIN, "default", "client")


@dataclass(frozen=True)
class IssuedCa:
    ca: CertificateAuthority
    cert_pem: bytes  # also the trust bundle: one root
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return self.ca.cert

    @property
    def key(self) -> PrivateKey:
        return self.ca.key


@dataclass(frozen=True)
class IssuedLeaf:
    cert: x509.Certificate
    key: PrivateKey
    spiffe_id: SpiffeId | None  # None when ``uri_sans`` made it something other than an SVID
    cert_pem: bytes  # the chain as a server sends it: the leaf (CAs are roots, no intermediates)
    key_pem: bytes
    ca: IssuedCa


def make_ca(
    alg: Algorithm = Algorithm.ECDSA_P256, trust_domain: str = TRUST_DOMAIN, *, tag: str = "default"
) -> IssuedCa:
    """A root CA, cached per (alg, trust_domain, tag) for the session; another tag, another CA."""
    return _cached_ca(alg, trust_domain, tag)


@functools.cache
def _cached_ca(alg: Algorithm, trust_domain: str, tag: str) -> IssuedCa:
    ca = generate_ca(
        trust_domain, now=datetime.now(UTC) - timedelta(hours=1), alg=alg, ttl=timedelta(days=30)
    )
    return IssuedCa(ca, certs_to_pem([ca.cert]), key_to_pem(ca.key))


def make_leaf(
    ca: IssuedCa | None = None,
    spiffe_id: SpiffeId | str = DEFAULT_ID,
    *,
    alg: Algorithm | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    uri_sans: Sequence[str] | None = None,
    dns_sans: Sequence[str] = (),
) -> IssuedLeaf:
    """A leaf signed by ``ca`` (default: the cached ECDSA CA), with a fresh key of ``alg``.

    ``alg`` defaults to the CA's algorithm. Validity defaults to one minute ago until 24 h from
    now. ``uri_sans`` replaces the SPIFFE URI SAN with exactly these URIs (empty: no SAN at all),
    keeping the rest of the SVID profile, for tests of what a validator must refuse;
    ``dns_sans`` adds DNS names to those (for servers that clients check by name).
    """
    ca = ca if ca is not None else make_ca()
    key = generate_key(alg if alg is not None else ca.ca.algorithm)
    now = datetime.now(UTC)
    not_before = not_before if not_before is not None else now - timedelta(minutes=1)
    not_after = not_after if not_after is not None else now + timedelta(hours=24)
    if uri_sans is None and not dns_sans:
        sid = SpiffeId.parse(spiffe_id) if isinstance(spiffe_id, str) else spiffe_id
        cert = issue_svid(ca.ca, key.public_key(), sid, not_before=not_before, not_after=not_after)
        leaf_id: SpiffeId | None = sid
    else:
        cert = _non_svid_leaf(ca.ca, key, uri_sans or (), dns_sans, not_before, not_after)
        leaf_id = None
    return IssuedLeaf(cert, key, leaf_id, certs_to_pem([cert]), key_to_pem(key), ca)


def write_leaf(leaf: IssuedLeaf, directory: Path) -> tuple[Path, Path, Path]:
    """Write ``cert.pem``, ``key.pem`` and ``ca.pem`` (the bundle) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "cert.pem", directory / "key.pem", directory / "ca.pem")
    for path, data in zip(paths, (leaf.cert_pem, leaf.key_pem, leaf.ca.cert_pem), strict=True):
        path.write_bytes(data)
    return paths


def _non_svid_leaf(
    ca: CertificateAuthority,
    key: PrivateKey,
    uri_sans: Sequence[str],
    dns_sans: Sequence[str],
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    # Deliberately outside the product's profile: the product cannot issue these.
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "not-an-svid")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([EKU.SERVER_AUTH, EKU.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if uri_sans or dns_sans:
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri) for uri in uri_sans]
        sans += [x509.DNSName(name) for name in dns_sans]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca.key, None if ca.algorithm is Algorithm.ML_DSA_65 else hashes.SHA256())
