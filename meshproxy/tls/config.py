"""TLS configuration as the data plane sees it.

Owns ``TlsConfig``, the frozen form of one Envoy ``DownstreamTlsContext`` or
``UpstreamTlsContext`` (the xDS compiler fills it; field paths in errors are Envoy's), and its
own consistency checks. ``build.py`` turns it into an OpenSSL context. The defaults describe a
link between two meshproxy sidecars: TLS 1.3 only, PQ ``required``.

Must not import asyncio, sockets, pyOpenSSL or cryptography: the config compiler imports this
module for every bootstrap, and a configuration without TLS never loads OpenSSL (docs/memory.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal

from meshproxy.errors import ConfigError
from meshproxy.tls.policy import MESH_DEFAULT, PqPolicy

SanType = Literal["URI", "DNS", "EMAIL", "IP_ADDRESS"]


@dataclass(frozen=True, slots=True)
class SanMatcher:
    """One entry of validation_context.match_typed_subject_alt_names: a peer certificate SAN of
    ``san_type`` that ``test`` accepts (the compiler builds it from the StringMatcher ``source``
    describes, e.g. ``exact spiffe://td/ns/a/sa/b``; a DNS ``exact`` also accepts a wildcard
    SAN of the certificate, as Envoy's dnsNameMatch)."""

    san_type: SanType
    source: str
    test: Callable[[bytes], bool] = field(compare=False, repr=False)
    match: Any = field(compare=False, repr=False)  # the StringMatch ``test`` was built from

    def __reduce__(self) -> tuple[Any, ...]:
        # Built again where it is unpickled (worker processes get compiled configs): ``test``
        # is a closure, which does not pickle.
        from meshproxy.config.compile_tls import build_san_matcher

        return build_san_matcher, (self.san_type, self.match)


PeerSans = Mapping[SanType, tuple[str, ...]]
"""A verified leaf's subject alternative names by type (``engine.subject_alt_names``)."""


class TlsVersion(IntEnum):
    """Envoy's TlsParameters.TlsProtocol values that we accept, as protocol version numbers
    (RFC 8446 §4.2.1: what OpenSSL's ``TLS1_2_VERSION`` and ``TLS1_3_VERSION`` are)."""

    TLSv1_2 = 0x0303
    TLSv1_3 = 0x0304


@dataclass(frozen=True, slots=True)
class TlsConfig:
    server_side: bool
    # common_tls_context.tls_certificates[0]: PEM chain (leaf first) and PEM private key.
    certificate_chain: bytes = b""
    private_key: bytes = b""
    # common_tls_context.validation_context.trusted_ca (PEM bundle); None: peers not verified.
    trusted_ca: bytes | None = None
    # validation_context.match_typed_subject_alt_names: a peer is accepted when one of its SANs
    # matches one of them (any peer, if the tuple is empty).
    match_sans: tuple[SanMatcher, ...] = ()
    require_client_certificate: bool = False
    min_version: TlsVersion = TlsVersion.TLSv1_3
    max_version: TlsVersion = TlsVersion.TLSv1_3
    pq_policy: PqPolicy = MESH_DEFAULT
    # tls_params.cipher_suites: OpenSSL names; "TLS_…" names are TLS 1.3 suites.
    cipher_suites: tuple[str, ...] = ()
    # tls_params.signature_algorithms: OpenSSL/IANA scheme names (e.g. ecdsa_secp256r1_sha256).
    signature_algorithms: tuple[str, ...] = ()
    alpn: tuple[str, ...] = ()
    sni: str = ""  # UpstreamTlsContext.sni

    def __post_init__(self) -> None:
        problems = []
        if self.min_version > self.max_version:
            problems.append(
                "common_tls_context.tls_params: tls_minimum_protocol_version "
                f"{self.min_version.name} is above tls_maximum_protocol_version {self.max_version.name}"
            )
        if self.server_side and not (self.certificate_chain and self.private_key):
            problems.append("common_tls_context.tls_certificates: a server needs a certificate chain and key")
        if bool(self.certificate_chain) != bool(self.private_key):
            problems.append(
                "common_tls_context.tls_certificates[0]: give both certificate_chain and private_key"
            )
        if self.require_client_certificate and (not self.server_side or self.trusted_ca is None):
            problems.append(
                "require_client_certificate: needs a DownstreamTlsContext with "
                "common_tls_context.validation_context.trusted_ca"
            )
        if self.match_sans and self.trusted_ca is None:
            problems.append(
                "common_tls_context.validation_context.match_typed_subject_alt_names: "
                "needs trusted_ca (an identity is only meaningful on a verified certificate)"
            )
        if self.sni and self.server_side:
            problems.append("sni: only an UpstreamTlsContext sends a server name")
        if problems:
            raise ConfigError(problems)

    def identity_allowed(self, sans: PeerSans) -> bool:
        """Whether a verified peer with these SANs is one we may talk to."""
        if not self.match_sans:
            return True
        for matcher in self.match_sans:
            test = matcher.test
            if any(test(san.encode()) for san in sans.get(matcher.san_type, ())):
                return True
        return False
