"""select_chain: Envoy's filter-chain match order (port, destination IP, server name, transport,
application protocols in the client's order, source type, source IP, source port).

Envoy (``findFilterChainForApplicationProtocols``) walks the protocols the client offered in the
order it offered them; the first one a chain names wins, whatever the order of the chains in the
listener; a chain that names none is the fallback.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

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
    assert (
        select_chain(listener(H2, H1), ("127.0.0.1", 443), ("127.0.0.1", 1), "", "tls", ("spdy/3",)) is None
    )


def tcp_chain(name: str, **match: Any) -> FilterChain:
    return FilterChain(name, FilterChainMatch(**match), TcpProxy(name))


def nets(*cidrs: str) -> tuple[IPv4Network | IPv6Network, ...]:
    return tuple(ip_network(c) for c in cidrs)


VIP = tcp_chain("vip", destination_port=8080, prefix_ranges=nets("10.96.0.17/32"))
SUBNET = tcp_chain("subnet", destination_port=8080, prefix_ranges=nets("10.96.0.0/16", "fd00::/64"))
PORT = tcp_chain("port", destination_port=8080)
OTHER_PORT = tcp_chain("other-port", destination_port=9090, prefix_ranges=nets("10.96.0.17/32"))
DEFAULT = tcp_chain("default")


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        (("10.96.0.17", 8080), "vip"),  # the longest prefix wins
        (("10.96.3.4", 8080), "subnet"),
        (("fd00::9", 8080), "subnet"),  # either family's range
        (("192.0.2.1", 8080), "port"),  # no range holds it: the chain without ranges
        (("10.96.0.17", 9090), "other-port"),  # the port comes before the address
        (("10.96.0.17", 7070), "default"),
    ],
)
def test_destination_port_then_destination_ip(destination: tuple[str, int], expected: str) -> None:
    found = select_chain(
        Listener("l", SocketAddress("0.0.0.0", 15001), (SUBNET, VIP, PORT, OTHER_PORT), DEFAULT), destination
    )
    assert found is not None and found.name == expected


def test_no_backtracking_after_the_destination_ip_step() -> None:
    """Envoy: the most specific destination match is kept even if a later step then fails; the
    less specific chain that would have matched is not tried (the default chain serves)."""
    tls_vip = tcp_chain("tls-vip", prefix_ranges=nets("10.0.0.1/32"), transport_protocol="tls")
    anything = tcp_chain("any")
    lst = Listener("l", SocketAddress("0.0.0.0", 1), (tls_vip, anything), DEFAULT)
    assert select_chain(lst, ("10.0.0.1", 80), transport_protocol="raw_buffer") is DEFAULT
    assert select_chain(lst, ("10.0.0.2", 80), transport_protocol="raw_buffer") is anything
    assert select_chain(Listener("l", SocketAddress("0.0.0.0", 1), (tls_vip,)), ("10.0.0.1", 80)) is None


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (("127.0.0.1", 5000), "local"),  # loopback is SAME_IP_OR_LOOPBACK, before source ranges
        (("10.0.0.1", 5000), "local"),  # the same IP as the destination
        (("10.1.2.3", 4000), "from-subnet-port"),  # a source port beats none
        (("10.1.2.3", 4001), "from-subnet"),
        (("10.1.9.9", 4001), "from-wide"),
        (("192.0.2.7", 1), "external"),
    ],
)
def test_source_type_then_source_ip_then_source_port(source: tuple[str, int], expected: str) -> None:
    chains = (
        tcp_chain("local", source_type="SAME_IP_OR_LOOPBACK"),
        tcp_chain("external", source_type="EXTERNAL"),
        tcp_chain("from-wide", source_type="EXTERNAL", source_prefix_ranges=nets("10.1.0.0/16")),
        tcp_chain("from-subnet", source_type="EXTERNAL", source_prefix_ranges=nets("10.1.2.0/24")),
        tcp_chain(
            "from-subnet-port",
            source_type="EXTERNAL",
            source_prefix_ranges=nets("10.1.2.0/24"),
            source_ports=(4000,),
        ),
    )
    found = select_chain(Listener("l", SocketAddress("0.0.0.0", 1), chains), ("10.0.0.1", 80), source)
    assert found is not None and found.name == expected


def test_a_v4_mapped_address_matches_v4_ranges() -> None:
    lst = Listener("l", SocketAddress("::", 1), (VIP,))
    assert select_chain(lst, ("::ffff:10.96.0.17", 8080)) is VIP
