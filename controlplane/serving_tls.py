"""The controlplane's own TLS certificate for its gRPC on 15012, issued by its CA, kept fresh.

Owns two things:

- `ServingCertificate` (sans-I/O, ``now`` is a parameter): the serving SVID of the controlplane,
  ``spiffe://<trust domain>/controlplane`` with DNS and IP SANs (`certs.issue_svid`'s serving
  profile) so that a gRPC client checking the host name it dialled (or the SNI it sends)
  accepts it; a fresh ECDSA P-256 key each time (what any gRPC client handshakes with; the CA
  signs with whatever key it has, and grpcio's BoringSSL verifies an ML-DSA-65 CA above it:
  tests/unit/controlplane/test_serving_tls.py); the CA policy's default lifetime, clamped
  to the CA's own expiry; renewed once half of its lifetime has passed.
- `server_credentials`: grpc's dynamic server credentials over it. gRPC calls the fetcher before
  every handshake; it answers "no change" until the certificate is due, then hands over the
  renewed one, so a long-running server rotates without a restart and open streams carry on.
  A lazy renewal needs no timer: a certificate nobody handshakes with needs no renewing.

Sidecars verify this certificate against the trust bundle (the CA certificate), as they verify
each other: see docs/controlplane.md, "Serving over TLS (15012)".

Must not depend on: asyncio, files, the CA service (it is handed the `CertificateAuthority`).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
from cryptography import x509

from meshproxy.errors import ConfigError
from meshproxy.identity import certs
from meshproxy.identity.spiffe import SpiffeId

log = logging.getLogger(__name__)

CONTROLPLANE_PATH = "/controlplane"
# Always in the certificate: sidecars on the controlplane's own machine dial 127.0.0.1.
LOOPBACK_SAN = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))

Host = x509.DNSName | x509.IPAddress


def default_sans() -> tuple[str, ...]:
    """The DNS SANs when ``--xds-tls-san`` is not given: this host's name, and localhost."""
    return tuple(dict.fromkeys((socket.gethostname(), "localhost")))


def parse_sans(values: Sequence[str]) -> tuple[Host, ...]:
    """``--xds-tls-san`` values as SANs: an IP address literal becomes an IP SAN, anything else a
    DNS SAN (a host name, ``*.`` wildcard allowed); 127.0.0.1 is always added."""
    hosts: list[Host] = []
    problems = []
    for value in values:
        try:
            hosts.append(x509.IPAddress(ipaddress.ip_address(value.strip("[]"))))
            continue
        except ValueError:
            pass
        labels = value.removeprefix("*.").split(".")
        if not value.isascii() or not all(label and _is_label(label) for label in labels):
            problems.append(f"--xds-tls-san: {value!r} is neither an IP address nor a DNS name")
            continue
        hosts.append(x509.DNSName(value.lower()))
    if problems:
        raise ConfigError(problems)
    return tuple(dict.fromkeys([*hosts, LOOPBACK_SAN]))


def _is_label(label: str) -> bool:
    return len(label) <= 63 and label.replace("-", "").isalnum() and not label.startswith("-")


@dataclass(frozen=True, slots=True)
class Serving:
    """One serving certificate: PEM key and chain, and when it is due for renewal."""

    key_pem: bytes
    chain_pem: bytes
    certificate: x509.Certificate
    renew_at: datetime


class ServingCertificate:
    """The controlplane's serving certificate; `renewed(now)` replaces it once it is due."""

    def __init__(
        self, ca: certs.CertificateAuthority, hosts: Sequence[Host], *, ttl: timedelta, now: datetime
    ) -> None:
        self._ca = ca
        self._hosts = tuple(hosts)
        self._ttl = ttl
        self.spiffe_id = SpiffeId.parse(f"spiffe://{ca.trust_domain}{CONTROLPLANE_PATH}")
        self.current = self._issue(now)

    def renewed(self, now: datetime) -> Serving | None:
        """A new certificate when the current one is past half of its life, else None."""
        if now < self.current.renew_at:
            return None
        self.current = self._issue(now)
        return self.current

    def _issue(self, now: datetime) -> Serving:
        not_after = min(now + self._ttl, self._ca.cert.not_valid_after_utc)
        if not_after <= now:
            raise ConfigError(
                [f"the CA expired at {self._ca.cert.not_valid_after_utc.isoformat()}: no serving certificate"]
            )
        key = certs.generate_key(certs.Algorithm.ECDSA_P256)
        cert = certs.issue_svid(
            self._ca,
            key.public_key(),
            self.spiffe_id,
            not_before=now - certs.BACKDATE,
            not_after=not_after,
            hosts=self._hosts,
        )
        log.info(
            "serving certificate for %s (%s): serial %x, expires %s",
            self.spiffe_id,
            ", ".join(str(h.value) for h in self._hosts),
            cert.serial_number,
            not_after.isoformat(),
        )
        return Serving(certs.key_to_pem(key), certs.certs_to_pem([cert]), cert, now + (not_after - now) / 2)


def server_credentials(serving: ServingCertificate, clock: Callable[[], datetime]) -> grpc.ServerCredentials:
    """Server-side TLS whose certificate `serving` renews between handshakes (module docstring)."""

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        try:
            renewed = serving.renewed(clock())
        except Exception:  # keep serving the last certificate; the next handshake tries again
            log.exception("renewing the serving certificate failed")
            return None
        return None if renewed is None else _configuration(renewed)

    return grpc.dynamic_ssl_server_credentials(
        _configuration(serving.current), fetch, require_client_authentication=False
    )


def _configuration(serving: Serving) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(serving.key_pem, serving.chain_pem)])
