"""Filter-chain matching: which of a listener's filter chains a new connection takes.

Owns Envoy's precedence (``FilterChainMatch``'s documented order): destination port,
destination IP (``prefix_ranges``, the longest matching prefix), server name, transport
protocol, application protocols (in the client's order of preference), source type, source IP
(``source_prefix_ranges``), source port. Each step keeps only the most specific candidates that
match; a chain that does not constrain a step matches it as the least specific. As in Envoy
there is no backtracking: a step that leaves nothing means no chain (then the listener's
``default_filter_chain``). The destination is the connection's local address, the original
destination when the listener has the original_dst filter. A pure function of the listener's
config and what the listener saw; must not import asyncio or sockets.

Cost: O(chains) per step; an address is parsed only when some candidate has a range.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from meshproxy.config.model import FilterChain, Listener

Address = tuple[str, int]


def select_chain(
    listener: Listener,
    destination: Address,
    source: Address = ("", 0),
    server_name: str = "",
    transport_protocol: str = "raw_buffer",
    application_protocols: tuple[str, ...] = (),
) -> FilterChain | None:
    """Envoy's filter-chain match order: each criterion narrows the candidates, most specific first."""
    port = destination[1]
    chains = [c for c in listener.filter_chains if c.match.destination_port in (port, None)]
    if any(c.match.destination_port == port for c in chains):
        chains = [c for c in chains if c.match.destination_port == port]
    if any(c.match.prefix_ranges for c in chains):
        local = _ip(destination[0])
        chains = _narrow(chains, lambda c: _prefix_rank(c.match.prefix_ranges, local))
    chains = _narrow(chains, lambda c: _server_name_rank(c.match.server_names, server_name))
    chains = _narrow(chains, lambda c: _rank_in(c.match.transport_protocol, transport_protocol))
    # Envoy (findFilterChainForApplicationProtocols) walks the client's protocols in the
    # client's order of preference: the first one some chain names wins; then a chain that
    # names none. The order of the chains in the listener does not matter.
    for protocol in application_protocols:
        named = [c for c in chains if protocol in c.match.application_protocols]
        if named:
            chains = named
            break
    else:
        chains = [c for c in chains if not c.match.application_protocols]
    if len(chains) > 1 or (chains and _constrains_source(chains[0])):
        peer_ip, local_ip = _ip(source[0]), _ip(destination[0])
        chains = _narrow(chains, lambda c: _source_type_rank(c.match.source_type, peer_ip, local_ip))
        chains = _narrow(chains, lambda c: _prefix_rank(c.match.source_prefix_ranges, peer_ip))
        chains = _narrow(chains, lambda c: _port_rank(c.match.source_ports, source[1]))
    return chains[0] if chains else listener.default_filter_chain


def _constrains_source(chain: FilterChain) -> bool:
    m = chain.match
    return m.source_type != "ANY" or bool(m.source_prefix_ranges) or bool(m.source_ports)


def _ip(host: str) -> IPv4Address | IPv6Address | None:
    try:
        address = ip_address(host.split("%", 1)[0])
    except ValueError:
        return None  # not an IP (a unix socket, nothing known): only unconstrained chains match
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def _narrow(chains: list[FilterChain], rank: Callable[[FilterChain], int | None]) -> list[FilterChain]:
    ranked = [(r, c) for c in chains if (r := rank(c)) is not None]
    if not ranked:
        return []
    best = max(r for r, _ in ranked)
    return [c for r, c in ranked if r == best]


def _prefix_rank(
    ranges: tuple[IPv4Network | IPv6Network, ...], address: IPv4Address | IPv6Address | None
) -> int | None:
    """The longest prefix of ``ranges`` holding ``address`` (-1 when the chain has none)."""
    if not ranges:
        return -1
    if address is None:
        return None
    return max((r.prefixlen for r in ranges if address in r), default=None)


def _source_type_rank(
    kind: str, peer: IPv4Address | IPv6Address | None, local: IPv4Address | IPv6Address | None
) -> int | None:
    if kind == "ANY":
        return 1
    same = peer is not None and (peer.is_loopback or peer == local)
    return 2 if same == (kind == "SAME_IP_OR_LOOPBACK") else None


def _port_rank(ports: tuple[int, ...], port: int) -> int | None:
    if not ports:
        return 1
    return 2 if port in ports else None


def _rank_in(configured: str, actual: str) -> int | None:
    if not configured:
        return 1
    return 2 if configured == actual else None


def _server_name_rank(names: tuple[str, ...], server_name: str) -> int | None:
    if not names:
        return 1
    if server_name in names:
        return 1000
    for name in names:
        if name.startswith("*.") and server_name.endswith(name[1:]):
            return 100 + len(name)
    return None
