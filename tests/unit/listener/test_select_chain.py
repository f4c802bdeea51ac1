"""select_chain: Envoy's filter-chain match order, application protocols in the client's order.

Envoy (``findFilterChainForApplicationProtocols``) walks the protocols the client offered in the
order it offered them; the first one a chain names wins, whatever the order of the chains in the
listener; a chain that names none is the fallback.
"""

from __future__ import annotations

import pytest

from meshproxy.config.model import FilterChain, FilterChainMatch, Listener, SocketAddress, TcpProxy
from meshproxy.listener.chain_match import select_chain


def chain(name: str, *alpn: str, transport: str = "tls") -> FilterChain:
    return FilterChain(
        name, FilterChainMatch(transport_protocol=transport, application_protocols=alpn), TcpProxy(name)
    )


def listener(*chains: FilterChain) -> Listener:
    return Listener("l", SocketAddress("127.0.0.1", 0), chains)


H2, H1, ANY = chain("h2", "h2"), chain("h1", "http/1.1"), chain("any")


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        (("http/1.1", "h2"), "h1"),  # the client prefers HTTP/1.1, though the h2 chain is listed first
        (("h2", "http/1.1"), "h2"),
        (("h2",), "h2"),
        (("spdy/3", "http/1.1"), "h1"),  # protocols no chain names are skipped
        (("spdy/3",), "any"),
        ((), "any"),
    ],
)
def test_application_protocols_follow_the_clients_preference(offered: tuple[str, ...], expected: str) -> None:
    for chains in ((H2, H1, ANY), (ANY, H1, H2)):
        found = select_chain(listener(*chains), ("127.0.0.1", 443), ("127.0.0.1", 1), "", "tls", offered)
        assert found is not None and found.name == expected


def test_without_a_fallback_an_unnamed_protocol_matches_nothing() -> None:
    assert select_chain(listener(H2, H1), ("127.0.0.1", 443), ("127.0.0.1", 1), "", "tls", ("spdy/3",)) is None
