"""Post-quantum key-exchange policy: the one place that decides which TLS groups we offer.

Owns the three policies of DESIGN decision 2 and issue 3 and the verdict on a finished
handshake:

- ``preferred`` (the default for an Envoy config that names no curves) offers
  ``X25519MLKEM768:X25519``: hybrid with peers that can, classical with the rest;
- ``required`` (the mesh default between our own proxies) offers only ``X25519MLKEM768``; a
  classical-only peer gets a handshake_failure alert from OpenSSL itself, because there is no
  group in common;
- ``off`` offers ``X25519:P-256``.

An explicit Envoy ``tls_params.ecdh_curves`` list is honoured as given; its mode follows from
what it contains (only hybrid groups: required; some: preferred; none: off). Group names are
Envoy's (``X25519``, ``P-256``, ``X25519MLKEM768``); OpenSSL reports some in lower case or by
their SEC names, which ``canonical_group`` maps back. Depends on nothing but the standard
library and ``meshproxy.errors``; must not import OpenSSL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from meshproxy.errors import ConfigError

HYBRID = "X25519MLKEM768"  # IANA group 0x11EC

# Groups whose key exchange includes ML-KEM (FIPS 203): hybrids and pure ML-KEM.
PQ_GROUPS = frozenset(
    {HYBRID, "SecP256r1MLKEM768", "SecP384r1MLKEM1024", "MLKEM512", "MLKEM768", "MLKEM1024"}
)
CLASSICAL_GROUPS = frozenset({"X25519", "X448", "P-256", "P-384", "P-521"})

# OpenSSL's names for groups that Envoy (BoringSSL) spells differently.
_CANONICAL = {
    "x25519": "X25519",
    "x448": "X448",
    "secp256r1": "P-256",
    "prime256v1": "P-256",
    "secp384r1": "P-384",
    "secp521r1": "P-521",
}


def canonical_group(name: str) -> str:
    """Envoy's spelling of a group name as OpenSSL reports or accepts it."""
    return _CANONICAL.get(name, _CANONICAL.get(name.lower(), name))


class PqMode(StrEnum):
    PREFERRED = "preferred"
    REQUIRED = "required"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class PqPolicy:
    """The groups offered, most preferred first, and the mode they add up to."""

    mode: PqMode
    groups: tuple[str, ...]

    @property
    def openssl_groups(self) -> str:
        """The ``SSL_CTX_set1_groups_list`` string (OpenSSL accepts Envoy's spellings)."""
        return ":".join(self.groups)

    def verdict(self, group: str) -> str | None:
        """None if a handshake that negotiated ``group`` is acceptable, else the reason it is not.

        OpenSSL only ever negotiates a group we offered, so this refuses nothing a correct
        OpenSSL lets through; it is the check that the logs, counters and tests can name.
        """
        group = canonical_group(group)
        if self.mode is PqMode.REQUIRED and group not in PQ_GROUPS:
            return (
                f"peer negotiated {group or 'no group'}, not a post-quantum group (policy requires {HYBRID})"
            )
        if group not in self.groups:
            return f"peer negotiated {group or 'no group'}, which we did not offer ({self.openssl_groups})"
        return None


PREFERRED = PqPolicy(PqMode.PREFERRED, (HYBRID, "X25519"))
REQUIRED = PqPolicy(PqMode.REQUIRED, (HYBRID,))
OFF = PqPolicy(PqMode.OFF, ("X25519", "P-256"))

# Between two meshproxy sidecars nothing classical is needed, so nothing classical is offered.
MESH_DEFAULT = REQUIRED

_NAMED = {p.mode.value: p for p in (PREFERRED, REQUIRED, OFF)}


def named(name: str, field: str = "pq_policy") -> PqPolicy:
    """The policy called ``preferred``, ``required`` or ``off`` (as mesh.yaml spells it)."""
    policy = _NAMED.get(name)
    if policy is None:
        raise ConfigError([f'{field}: "{name}" is not a policy; use one of {", ".join(_NAMED)}'])
    return policy


def from_ecdh_curves(curves: Sequence[str], field: str = "tls_params.ecdh_curves") -> PqPolicy:
    """The policy an Envoy ``ecdh_curves`` list describes; an empty list means ``preferred``."""
    if not curves:
        return PREFERRED
    groups = tuple(canonical_group(c) for c in curves)
    problems = [
        f'{field}[{i}]: "{c}" is not a supported group; use one of '
        f"{', '.join(sorted(PQ_GROUPS | CLASSICAL_GROUPS))}"
        for i, (c, g) in enumerate(zip(curves, groups, strict=True))
        if g not in PQ_GROUPS and g not in CLASSICAL_GROUPS
    ]
    if len(set(groups)) != len(groups):
        problems.append(f"{field}: a group is listed twice")
    if problems:
        raise ConfigError(problems)
    hybrid = [g in PQ_GROUPS for g in groups]
    mode = PqMode.REQUIRED if all(hybrid) else PqMode.PREFERRED if any(hybrid) else PqMode.OFF
    for policy in _NAMED.values():
        if policy.groups == groups:
            return policy
    return PqPolicy(mode, groups)
