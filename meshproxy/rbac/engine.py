"""Envoy's RBAC engine, sans-I/O: rule trees compiled once into closures, evaluated per request.

Owns the semantics of ``envoy.config.rbac.v3.RBAC`` (Envoy's
``source/extensions/filters/common/rbac/engine_impl.cc`` and ``matchers.cc``):

1. A policy matches when one of its permissions and one of its principals match.
2. ALLOW: the request is allowed when some policy matches; DENY: when none does; LOG: always,
   and ``matched`` names the policy that asks for it to be logged. The policy reported is the
   first match in name order (Envoy's policies are a ``std::map``).
3. ``and_*`` of nothing matches, ``or_*`` of nothing does not; ``not`` inverts.
4. Leaves that read the request (header, url_path) never match on a network filter, which has
   no request; leaves that read TLS (authenticated, requested_server_name, the TLS principal)
   never match a plaintext connection, except requested_server_name against "".
5. ``authenticated.principal_name`` is tried against each URI SAN, then each DNS SAN, then the
   subject (RFC 4514) of the verified peer certificate; without a principal_name, a verified
   peer certificate is enough.
6. Addresses: ``direct_remote_ip`` and ``source_ip`` read the connection's peer,
   ``remote_ip`` the client as the HCM's trusted x-forwarded-for names it (its last address,
   Envoy's rule with no trusted hops; the peer without one, or when that is not an IP), ``destination_ip``
   and the ports the connection's local (or original destination) address. An IPv4-mapped
   IPv6 address is its IPv4 address (dual-stack sockets).

Cost: everything that can be decided from the configuration is decided in ``compile_node``;
a request pays one call per node it visits, a cache lookup per address read (each distinct
address is parsed once per process, ``_parse_ip``), the path split once, and a header index
only when a non-pseudo header leaf is reached. Must not import asyncio, sockets or protobuf.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from ipaddress import IPv6Address, ip_address
from operator import attrgetter
from typing import TYPE_CHECKING

from meshproxy.rbac.model import (
    AllOf,
    Always,
    AnyOf,
    Authenticated,
    Cidr,
    Header,
    Node,
    Not,
    PortRange,
    Rules,
    ServerName,
    TlsPrincipal,
    UrlPath,
)
from meshproxy.router.match import compile_header_matcher, compile_string_match, split_target

if TYPE_CHECKING:
    from meshproxy.config.model import StringMatch
    from meshproxy.tls.engine import Negotiated

# An address as the CIDR leaves compare it: (IP version, its integer value).
Ip = tuple[int, int]
# Pseudo-headers the codecs carry apart from the header list, and the Facts attribute of each.
_PSEUDO = {b":method": "method", b":path": "target", b":authority": "authority", b":scheme": "scheme"}
_EMPTY: dict[bytes, bytes] = {}


class Facts:
    """What one evaluation reads: the connection's (always) and the request's (HTTP only).

    Built by the filter that evaluates, once per request (HTTP) or connection (network).
    Addresses are text as the socket reports them. What is derived from them (parsed addresses,
    the path without its query, the header index) is computed on first use only.
    """

    __slots__ = (
        "_index",
        "_path",
        "authority",
        "headers",
        "local",
        "local_port",
        "method",
        "peer",
        "xff",
        "scheme",
        "target",
        "tls",
    )

    def __init__(
        self,
        *,
        peer: str,
        local: str,
        local_port: int,
        tls: Negotiated | None,
        xff: bytes | None = None,
        headers: Sequence[tuple[bytes, bytes]] | None = None,
        method: bytes = b"",
        target: bytes = b"",
        authority: bytes = b"",
        scheme: bytes = b"",
    ) -> None:
        self.peer = peer
        self.local = local
        self.local_port = local_port
        self.tls = tls
        self.xff = xff  # x-forwarded-for when the HCM trusts it (not use_remote_address)
        self.headers = headers  # None: a network filter (no request)
        self.method = method
        self.target = target  # after path normalisation, with the query
        self.authority = authority
        self.scheme = scheme
        # Derived on first use (an unset slot would cost an exception to discover).
        self._path: bytes | None = None
        self._index: dict[bytes, bytes] | None = None

    def address(self, which: str) -> Ip | None:
        """``direct_remote``, ``remote`` or ``destination`` (None: not an IP). Parsing is
        cached per distinct address (``_parse_ip``), so nothing is kept here."""
        if which == "direct_remote":
            return _parse_ip(self.peer)
        if which == "destination":
            return _parse_ip(self.local)
        xff = self.xff
        if xff:
            parsed = _parse_ip(xff.rpartition(b",")[2].strip().decode("latin-1"))
            if parsed is not None:
                return parsed
        return _parse_ip(self.peer)

    def path(self) -> bytes:
        """The request path without query and fragment."""
        path = self._path
        if path is None:
            path = self._path = split_target(self.target)[0]
        return path

    def index(self) -> dict[bytes, bytes]:
        """Every request header by lower-case name, repeats joined with ``,`` (Envoy's
        ``getAllOfHeaderAsString``); pseudo-headers are read from their attributes instead."""
        index = self._index
        if index is None:
            index = self._index = {}
            for name, value in self.headers or ():
                prev = index.get(name)
                index[name] = value if prev is None else prev + b"," + value
        return index


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str) -> Ip | None:
    """Cached across requests: a connection's peer and local address repeat on each of its
    requests, and parsing one costs more than the rest of a typical evaluation."""
    try:
        parsed = ip_address(text.partition("%")[0])  # a scope id is not part of the address
    except ValueError:
        return None
    if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return parsed.version, int(parsed)


Predicate = Callable[[Facts], bool]


class Engine:
    """One compiled ``Rules``: ``allows(facts)`` and the policy that decided."""

    __slots__ = ("action", "policies")

    def __init__(self, rules: Rules) -> None:
        self.action = rules.action
        self.policies: tuple[tuple[str, Predicate], ...] = tuple(
            (p.name, _policy(compile_node(AnyOf(p.permissions)), compile_node(AnyOf(p.principals))))
            for p in rules.policies
        )

    def matched(self, facts: Facts) -> str | None:
        """The first policy (in name order) that matches, or None."""
        for name, matches in self.policies:
            if matches(facts):
                return name
        return None

    def allows(self, facts: Facts) -> tuple[bool, str | None]:
        """Rule 2: (whether the request may pass, the policy that matched)."""
        name = self.matched(facts)
        if self.action == "ALLOW":
            return name is not None, name
        if self.action == "DENY":
            return name is None, name
        return True, name


def reads_destination(rules: Rules | None) -> bool:
    """Whether any leaf of ``rules`` reads the connection's local address or port (so a caller
    that must look it up per request can skip that otherwise)."""
    if rules is None:
        return False
    todo: list[Node] = [n for p in rules.policies for n in (*p.permissions, *p.principals)]
    while todo:
        node = todo.pop()
        if isinstance(node, PortRange) or (isinstance(node, Cidr) and node.address == "destination"):
            return True
        if isinstance(node, AllOf | AnyOf):
            todo.extend(node.children)
        elif isinstance(node, Not):
            todo.append(node.child)
    return False


def _policy(permission: Predicate, principal: Predicate) -> Predicate:
    return lambda facts: permission(facts) and principal(facts)


def compile_node(node: Node) -> Predicate:
    """One permission or principal tree as a predicate over ``Facts``."""
    if isinstance(node, Always):
        return lambda facts: True
    if isinstance(node, AllOf | AnyOf):
        return _combine([compile_node(child) for child in node.children], every=isinstance(node, AllOf))
    if isinstance(node, Not):
        inner = compile_node(node.child)
        return lambda facts: not inner(facts)
    if isinstance(node, Header):
        return _header(node)
    if isinstance(node, UrlPath):
        path_test = compile_string_match(node.match)
        return lambda facts: facts.headers is not None and path_test(facts.path())
    if isinstance(node, Cidr):
        return _cidr(node)
    if isinstance(node, PortRange):
        start, end = node.start, node.end
        if start == end:
            return lambda facts: facts.local_port == start
        return lambda facts: start <= facts.local_port < end
    if isinstance(node, ServerName):
        sni_test = compile_string_match(node.match)
        return lambda facts: sni_test((facts.tls.server_name if facts.tls else "").encode())
    if isinstance(node, Authenticated):
        return _authenticated(node.principal_name)
    return _tls_principal(node)


def _combine(children: list[Predicate], *, every: bool) -> Predicate:
    if len(children) == 1:
        return children[0]
    if len(children) == 2:  # the common shape (a path and a method): one call fewer than a loop
        first, second = children
        if every:
            return lambda facts: first(facts) and second(facts)
        return lambda facts: first(facts) or second(facts)
    if every:

        def all_of(facts: Facts) -> bool:
            for child in children:  # noqa: SIM110 - a loop, not all(): no generator per request
                if not child(facts):
                    return False
            return True

        return all_of

    def any_of(facts: Facts) -> bool:
        for child in children:  # noqa: SIM110 - a loop, not any(): no generator per request
            if child(facts):
                return True
        return False

    return any_of


def _header(node: Header) -> Predicate:
    """Other headers are read from the request's header index. A pseudo-header is read from
    its attribute: a string match directly (an empty value is a missing header, which matches
    only as an empty one under ``treat_missing_header_as_empty``, whatever ``invert`` says
    otherwise: ``compile_header_matcher``'s rules), a presence match through an index of one."""
    matcher = node.matcher
    name = matcher.name.encode()
    attribute = _PSEUDO.get(name)
    if attribute is None:
        index_test = compile_header_matcher(matcher)
        return lambda facts: facts.headers is not None and index_test(facts.index())
    read = attrgetter(attribute)
    if matcher.match is None:
        presence = compile_header_matcher(matcher)
        return lambda facts: (
            facts.headers is not None and presence({name: read(facts)} if read(facts) else _EMPTY)
        )
    test = compile_string_match(matcher.match)
    invert = matcher.invert
    missing = matcher.missing_as_empty and test(b"") != invert

    def pseudo(facts: Facts) -> bool:
        if facts.headers is None:
            return False
        value = read(facts)
        return test(value) != invert if value else missing

    return pseudo


def _cidr(node: Cidr) -> Predicate:
    network, which = node.network, node.address
    version, base, mask = network.version, int(network.network_address), int(network.netmask)

    def in_network(facts: Facts) -> bool:
        address = facts.address(which)
        return address is not None and address[0] == version and address[1] & mask == base

    return in_network


def _authenticated(principal_name: StringMatch | None) -> Predicate:
    if principal_name is None:
        return lambda facts: facts.tls is not None and bool(facts.tls.peer_chain)
    test = compile_string_match(principal_name)

    def authenticated(facts: Facts) -> bool:
        tls = facts.tls
        if tls is None or not tls.peer_chain:
            return False
        for uri in tls.peer_uris:  # a loop, not any(): no generator per request
            if test(uri.encode()):
                return True
        for name in tls.peer_dns_names():
            if test(name.encode()):
                return True
        return test(tls.peer_chain[0].subject.rfc4514_string().encode())

    return authenticated


def _tls_principal(node: TlsPrincipal) -> Predicate:
    groups, schemes = node.groups, node.signature_algorithms

    def negotiated(facts: Facts) -> bool:
        tls = facts.tls
        if tls is None:
            return False
        return (not groups or tls.group in groups) and (not schemes or tls.peer_signature in schemes)

    return negotiated
