"""Filter-chain matching: which of a listener's filter chains a new connection takes.

Owns Envoy's precedence (destination port, then server name, transport protocol, application
protocols in the client's order of preference), as a pure function of the listener's config and
what the listener filters saw. Must not import asyncio or sockets.
"""

from __future__ import annotations

from collections.abc import Callable

from meshproxy.config.model import FilterChain, Listener


def select_chain(
    listener: Listener,
    destination_port: int,
    server_name: str = "",
    transport_protocol: str = "raw_buffer",
    application_protocols: tuple[str, ...] = (),
) -> FilterChain | None:
    """Envoy's filter-chain match order: each criterion narrows the candidates, most specific first."""
    chains = [c for c in listener.filter_chains if c.match.destination_port in (destination_port, None)]
    if any(c.match.destination_port == destination_port for c in chains):
        chains = [c for c in chains if c.match.destination_port == destination_port]
    chains = _narrow(chains, lambda c: _server_name_rank(c.match.server_names, server_name))
    chains = _narrow(chains, lambda c: _rank_in(c.match.transport_protocol, transport_protocol))
    # Envoy (findFilterChainForApplicationProtocols) walks the client's protocols in the
    # client's order of preference: the first one some chain names wins; then a chain that
    # names none. The order of the chains in the listener does not matter.
    for protocol in application_protocols:
        named = [c for c in chains if protocol in c.match.application_protocols]
        if named:
            return named[0]
    chains = [c for c in chains if not c.match.application_protocols]
    return chains[0] if chains else listener.default_filter_chain


def _narrow(chains: list[FilterChain], rank: Callable[[FilterChain], int | None]) -> list[FilterChain]:
    ranked = [(r, c) for c in chains if (r := rank(c)) is not None]
    if not ranked:
        return []
    best = max(r for r, _ in ranked)
    return [c for r, c in ranked if r == best]


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
