"""Envoy's RBAC (``envoy.config.rbac.v3.RBAC``) as configured: frozen rule trees, no behaviour.

Owns the shape ``config/compile_rbac.py`` builds and ``engine.py`` compiles into closures. A
Permission and a Principal are both trees of the same node kinds (Envoy's ``and_rules`` /
``and_ids`` are ``AllOf``, ``or_rules`` / ``or_ids`` are ``AnyOf``, ``not_rule`` / ``not_id``
are ``Not``, ``any`` is ``Always``); the leaves say which fact of the request or connection
they test. ``TlsPrincipal`` is meshproxy's extension (``proto/meshproxy/rbac/v1/pq.proto``).
Must not import protobuf, asyncio or sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Literal

from meshproxy.config.model import HeaderMatcher, StringMatch

Action = Literal["ALLOW", "DENY", "LOG"]
# Which address a CIDR leaf reads: the connection's peer (Envoy's direct_remote_ip, and the
# deprecated source_ip), or the client as x-forwarded-for names it (remote_ip).
Address = Literal["direct_remote", "remote", "destination"]


@dataclass(frozen=True, slots=True)
class Always:
    """``any: true``."""


@dataclass(frozen=True, slots=True)
class AllOf:
    """``and_rules`` / ``and_ids``: every child matches (an empty set matches)."""

    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """``or_rules`` / ``or_ids``: some child matches (an empty set does not)."""

    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


@dataclass(frozen=True, slots=True)
class Header:
    """A HeaderMatcher over the request's headers, pseudo-headers included (never matches on a
    network filter, which has no request)."""

    matcher: HeaderMatcher


@dataclass(frozen=True, slots=True)
class UrlPath:
    """``url_path``: the request path without query and fragment, after path normalisation."""

    match: StringMatch


@dataclass(frozen=True, slots=True)
class Cidr:
    """``destination_ip``, ``direct_remote_ip``, ``source_ip``, ``remote_ip``."""

    address: Address
    network: IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class PortRange:
    """``destination_port`` (start == end) or ``destination_port_range`` ([start, end))."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ServerName:
    """``requested_server_name``: the SNI the client sent ("" without TLS or SNI)."""

    match: StringMatch


@dataclass(frozen=True, slots=True)
class Authenticated:
    """``authenticated``: a verified peer certificate; with ``principal_name``, one of its URI
    SANs, else DNS SANs, else its subject matches."""

    principal_name: StringMatch | None


@dataclass(frozen=True, slots=True)
class TlsPrincipal:
    """meshproxy.rbac.v1.TlsPrincipal: the negotiated group and the peer's signature scheme."""

    groups: frozenset[str]
    signature_algorithms: frozenset[str]


Node = (
    Always
    | AllOf
    | AnyOf
    | Not
    | Header
    | UrlPath
    | Cidr
    | PortRange
    | ServerName
    | Authenticated
    | TlsPrincipal
)


@dataclass(frozen=True, slots=True)
class Policy:
    """A policy matches when one of its permissions and one of its principals match."""

    name: str
    permissions: tuple[Node, ...]
    principals: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Rules:
    """``envoy.config.rbac.v3.RBAC``; ``policies`` in name order (Envoy keeps them in a
    ``std::map``, so the first matching name is the one reported)."""

    action: Action
    policies: tuple[Policy, ...]


@dataclass(frozen=True, slots=True)
class RbacFilter:
    """``envoy.filters.http.rbac`` or ``envoy.filters.network.rbac``: enforced rules, shadow
    rules, or both (None: absent). ``stat_prefix`` and ``shadow_stat_prefix`` are the full
    Envoy namespaces of the enforced and the shadow counters."""

    rules: Rules | None
    shadow_rules: Rules | None
    stat_prefix: str
    shadow_stat_prefix: str
