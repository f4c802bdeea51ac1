"""SPIFFE IDs: parsing, the Kubernetes form, reading one from a certificate, and peer matchers.

Owns the one representation of a workload identity the rest of the proxy passes around
(`SpiffeId`), the rules that make a string one (the SPIFFE ID specification, section 2, with
the character sets go-spiffe and the other reference libraries enforce), the X.509-SVID rule for
finding it in a certificate (exactly one URI SAN, section 2 of the X.509-SVID specification), and
the matchers the TLS layer calls to decide whether a verified peer is allowed.

Rules, each with its own error message:
- the scheme is exactly ``spiffe://`` (lower-case); no query, fragment, userinfo or port;
- the trust domain is non-empty, at most 255 bytes, of ``a-z 0-9 . - _`` only (upper-case is
  refused, not folded: two spellings of one trust domain would be two identities to a matcher);
- the path is empty (the trust domain's own ID) or ``/``-separated segments of
  ``A-Z a-z 0-9 . - _``, none empty, none ``.`` or ``..``, no trailing ``/``;
- the whole ID is at most 2048 bytes.

Must not depend on: asyncio, sockets, files, the TLS engine. Pure functions over strings and
`cryptography` certificate objects; cryptography itself is imported by the three functions that
read a certificate, so that a proxy which only parses SPIFFE IDs (XFCC, RBAC, routes) never
loads it (docs/memory.md).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from meshproxy.errors import IdentityError

if TYPE_CHECKING:
    from cryptography import x509

SCHEME_PREFIX = "spiffe://"
MAX_ID_LENGTH = 2048
MAX_TRUST_DOMAIN_LENGTH = 255

_TRUST_DOMAIN_CHARS = frozenset(string.ascii_lowercase + string.digits + ".-_")
_SEGMENT_CHARS = frozenset(string.ascii_letters + string.digits + ".-_")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A valid SPIFFE ID: ``spiffe://<trust_domain><path>``; ``path`` is ``""`` or starts with ``/``.

    Constructing one directly validates it the same way `parse` does.
    """

    trust_domain: str
    path: str = ""

    def __post_init__(self) -> None:
        _check_trust_domain(self.trust_domain, self.trust_domain)
        _check_path(self.path, self.path)
        uri = str(self)
        if len(uri) > MAX_ID_LENGTH:
            raise IdentityError(
                f"SPIFFE ID {uri[:64]!r}...: {len(uri)} bytes, more than the {MAX_ID_LENGTH} allowed"
            )

    @classmethod
    def parse(cls, value: str) -> SpiffeId:
        """Parse and validate ``value``; `IdentityError` says which rule it breaks."""
        if not value:
            raise IdentityError("SPIFFE ID is empty")
        if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_LENGTH:
            raise IdentityError(f"SPIFFE ID {value[:64]!r}...: longer than the {MAX_ID_LENGTH} bytes allowed")
        if not value.startswith(SCHEME_PREFIX):
            if value[: len(SCHEME_PREFIX)].lower() == SCHEME_PREFIX:
                raise IdentityError(f"SPIFFE ID {value!r}: the scheme must be lower-case 'spiffe'")
            raise IdentityError(f"SPIFFE ID {value!r}: must start with 'spiffe://'")
        rest = value[len(SCHEME_PREFIX) :]
        if "?" in rest:
            raise IdentityError(f"SPIFFE ID {value!r}: must not have a query ('?')")
        if "#" in rest:
            raise IdentityError(f"SPIFFE ID {value!r}: must not have a fragment ('#')")
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            raise IdentityError(f"SPIFFE ID {value!r}: must not have userinfo ('@') before the trust domain")
        if ":" in authority:
            raise IdentityError(f"SPIFFE ID {value!r}: must not have a port (':') after the trust domain")
        _check_trust_domain(authority, value)
        _check_path(slash + path, value)
        return cls(authority, slash + path)

    @classmethod
    def for_service_account(cls, trust_domain: str, namespace: str, service_account: str) -> SpiffeId:
        """The Kubernetes form Istio and Linkerd use: ``spiffe://<td>/ns/<ns>/sa/<sa>``."""
        for what, name in (("namespace", namespace), ("service account", service_account)):
            if not name or "/" in name:
                raise IdentityError(f"{what} {name!r}: must be one non-empty SPIFFE path segment")
        return cls(trust_domain, f"/ns/{namespace}/sa/{service_account}")

    @classmethod
    def for_trust_domain(cls, trust_domain: str) -> SpiffeId:
        """The trust domain's own ID (no path), as a signing certificate carries it."""
        return cls(trust_domain)

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> SpiffeId:
        """The SPIFFE ID of an X.509-SVID: its one URI SAN, which must be a valid SPIFFE ID.

        A leaf (not a CA) must have a path; a CA certificate must not (X.509-SVID 3.1, 3.2).
        """
        from cryptography import x509

        what = describe_certificate(cert)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise IdentityError(
                f"{what}: no subjectAltName extension; an X.509-SVID carries its SPIFFE ID as one URI SAN"
            ) from None
        except x509.DuplicateExtension as exc:  # found by fuzzing: not a ValueError, was a traceback
            raise IdentityError(f"{what}: extension {exc.oid.dotted_string} appears twice") from None
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if not uris:
            raise IdentityError(f"{what}: no URI SAN; an X.509-SVID carries its SPIFFE ID as one URI SAN")
        if len(uris) > 1:
            raise IdentityError(
                f"{what}: {len(uris)} URI SANs ({', '.join(uris)}); an X.509-SVID must carry exactly one"
            )
        try:
            spiffe_id = cls.parse(uris[0])
        except IdentityError as exc:
            raise IdentityError(f"{what}: URI SAN is not a SPIFFE ID: {exc}") from None
        if is_ca(cert):
            if spiffe_id.path:
                raise IdentityError(f"{what}: a CA certificate's SPIFFE ID {spiffe_id} must not have a path")
        elif not spiffe_id.path:
            raise IdentityError(f"{what}: a leaf SVID's SPIFFE ID {spiffe_id} must have a path")
        return spiffe_id

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain}{self.path}"

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path[1:].split("/")) if self.path else ()

    @property
    def namespace(self) -> str | None:
        """The ``<ns>`` of ``/ns/<ns>/sa/<sa>``; None for an ID not of that form."""
        segments = self.segments
        return segments[1] if _is_service_account_form(segments) else None

    @property
    def service_account(self) -> str | None:
        """The ``<sa>`` of ``/ns/<ns>/sa/<sa>``; None for an ID not of that form."""
        segments = self.segments
        return segments[3] if _is_service_account_form(segments) else None


class SpiffeMatcher(Protocol):
    """Decides whether a verified peer identity is allowed. The TLS layer holds a list of these."""

    def matches(self, peer: SpiffeId) -> bool: ...


@dataclass(frozen=True, slots=True)
class ExactMatch:
    """The peer is exactly this ID."""

    id: SpiffeId

    def matches(self, peer: SpiffeId) -> bool:
        return peer == self.id


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    """The peer is this ID or below it, by whole path segments.

    ``spiffe://td/ns/a`` matches ``spiffe://td/ns/a/sa/b`` but not ``spiffe://td/ns/ab``. This is
    stricter than Envoy's string ``prefix`` matcher on a URI SAN on purpose: a character prefix
    lets ``ns/a`` admit the unrelated namespace ``ab``.
    """

    prefix: SpiffeId

    def matches(self, peer: SpiffeId) -> bool:
        if peer.trust_domain != self.prefix.trust_domain:
            return False
        path = self.prefix.path
        return not path or peer.path == path or peer.path.startswith(path + "/")


@dataclass(frozen=True, slots=True)
class TrustDomainMatch:
    """The peer belongs to this trust domain (any path)."""

    trust_domain: str

    def __post_init__(self) -> None:
        _check_trust_domain(self.trust_domain, self.trust_domain)

    def matches(self, peer: SpiffeId) -> bool:
        return peer.trust_domain == self.trust_domain


def describe_certificate(cert: x509.Certificate) -> str:
    """How error messages name a certificate: serial and subject (SVID subjects are often empty)."""
    try:
        subject = cert.subject.rfc4514_string() or "<empty subject>"
    except (ValueError, TypeError):  # found by fuzzing: a malformed Name raises when read
        subject = "<unreadable subject>"
    return f"certificate serial {cert.serial_number:x} ({subject})"


def leaf_spiffe_id(chain_pem: bytes) -> SpiffeId | None:
    """The SPIFFE ID of the first certificate in ``chain_pem``, if it has one (a listener's own
    SVID, read when its TLS filter chain is compiled)."""
    from cryptography import x509

    try:
        return SpiffeId.from_certificate(x509.load_pem_x509_certificates(chain_pem)[0])
    except (ValueError, IndexError, IdentityError):
        return None


def _is_service_account_form(segments: tuple[str, ...]) -> bool:
    return len(segments) == 4 and segments[0] == "ns" and segments[2] == "sa"


def is_ca(cert: x509.Certificate) -> bool:
    """Whether basicConstraints says CA:true (absent means a leaf)."""
    from cryptography import x509

    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _check_trust_domain(trust_domain: str, value: str) -> None:
    where = f"SPIFFE ID {value!r}" if value.startswith(SCHEME_PREFIX) else f"trust domain {value!r}"
    if not trust_domain:
        raise IdentityError(f"{where}: the trust domain is missing")
    if len(trust_domain) > MAX_TRUST_DOMAIN_LENGTH:
        raise IdentityError(
            f"{where}: the trust domain is {len(trust_domain)} bytes, more than {MAX_TRUST_DOMAIN_LENGTH}"
        )
    for ch in trust_domain:
        if ch not in _TRUST_DOMAIN_CHARS:
            if ch.isupper():
                raise IdentityError(f"{where}: the trust domain must be lower-case (found {ch!r})")
            raise IdentityError(
                f"{where}: the trust domain may hold only a-z, 0-9, '.', '-' and '_' (found {ch!r})"
            )


def _check_path(path: str, value: str) -> None:
    if not path:
        return
    where = f"SPIFFE ID {value!r}" if value.startswith(SCHEME_PREFIX) else f"SPIFFE path {value!r}"
    if not path.startswith("/"):
        raise IdentityError(f"{where}: the path must start with '/'")
    if path.endswith("/"):
        raise IdentityError(f"{where}: the path must not end with '/'")
    for segment in path[1:].split("/"):
        if not segment:
            raise IdentityError(f"{where}: the path must not contain an empty segment ('//')")
        if segment in (".", ".."):
            raise IdentityError(f"{where}: the path must not contain a {segment!r} segment")
        for ch in segment:
            if ch not in _SEGMENT_CHARS:
                raise IdentityError(
                    f"{where}: path segments may hold only A-Z, a-z, 0-9, '.', '-' and '_' (found {ch!r})"
                )
