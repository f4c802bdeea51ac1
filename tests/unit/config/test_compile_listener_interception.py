"""compile_listener, the interception fields (Istio's virtual listeners): original_dst,
use_original_dst, source and destination ranges, traffic direction, dual-stack addresses."""

# ruff: noqa: E501 (the tables hold whole expected messages; splitting them hides what users read)

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest
from unit.config.test_compile_listener import compiled, listener, problems_of, tcp, without_none


def test_interception_fields_compile() -> None:
    """What an Istio virtualOutbound listener carries: original_dst, use_original_dst, ranges."""
    doc = listener(
        use_original_dst=True,
        listener_filters=[
            {
                "name": "envoy.filters.listener.original_dst",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
                },
            }
        ],
        filter_chains=[
            {
                "filter_chain_match": {
                    "destination_port": 8080,
                    "prefix_ranges": [
                        {"address_prefix": "10.96.0.17", "prefix_len": 32},
                        {"address_prefix": "fd00::1:2"},
                    ],
                    "source_type": "SAME_IP_OR_LOOPBACK",
                    "source_prefix_ranges": [{"address_prefix": "10.1.2.3", "prefix_len": 16}],
                    "source_ports": [4000],
                },
                "filters": [tcp()],
            },
            {"filter_chain_match": {"destination_port": 8080}, "filters": [tcp()]},
        ],
    )
    result, problems = compiled(doc)
    assert problems == [] and result is not None
    assert result.original_dst and result.use_original_dst
    m = result.filter_chains[0].match
    assert m.prefix_ranges == (
        ip_network("10.96.0.17/32"),
        ip_network("fd00::1:2/128").supernet(new_prefix=0),
    )
    assert m.source_type == "SAME_IP_OR_LOOPBACK"
    assert m.source_prefix_ranges == (ip_network("10.1.0.0/16"),)  # host bits cleared, as Envoy does
    assert m.source_ports == (4000,)
    plain, _ = compiled(listener())
    assert plain is not None and not plain.original_dst and not plain.use_original_dst


def test_chains_differing_only_by_range_are_distinct_and_equal_ranges_clash() -> None:
    def chain(prefix: str) -> dict[str, Any]:
        return {
            "filter_chain_match": {"prefix_ranges": [{"address_prefix": prefix, "prefix_len": 32}]},
            "filters": [tcp()],
        }

    assert problems_of(listener(filter_chains=[chain("10.0.0.1"), chain("10.0.0.2")])) == []
    assert problems_of(listener(filter_chains=[chain("10.0.0.1"), chain("10.0.0.1")])) == [
        "l.filter_chains[1].filter_chain_match: matches the same connections as filter_chains[0]; "
        "Envoy rejects filter chains with identical matching rules"
    ]


@pytest.mark.parametrize("direction", ["INBOUND", "OUTBOUND", None])
def test_traffic_direction_is_kept_unspecified_unless_given(direction: str | None) -> None:
    doc = listener() if direction is None else listener(traffic_direction=direction)
    result, problems = compiled(doc)
    assert not problems and result is not None
    assert result.traffic_direction == (direction or "UNSPECIFIED")


def test_a_traffic_direction_the_proto_does_not_define_is_a_problem() -> None:
    assert problems_of(listener(traffic_direction=7)) == ["l.traffic_direction: 7 is not a TrafficDirection"]


@pytest.mark.parametrize(
    ("host", "ipv4_compat", "expected"),
    [("::", True, True), ("::", None, False), ("fd00::1", True, True), ("0.0.0.0", True, False)],
)
def test_ipv4_compat_makes_an_ipv6_listener_dual_stack(
    host: str, ipv4_compat: bool | None, expected: bool
) -> None:
    # On an IPv4 address the field changes nothing (Envoy ignores it there too).
    address = {
        "socket_address": without_none({"address": host, "port_value": 80, "ipv4_compat": ipv4_compat})
    }
    result, problems = compiled(listener(address=address))
    assert not problems and result is not None
    assert result.ipv4_compat is expected


def test_additional_addresses_are_refused_with_their_path() -> None:
    doc = listener(
        additional_addresses=[{"address": {"socket_address": {"address": "::", "port_value": 80}}}]
    )
    assert problems_of(doc) == [
        'l.additional_addresses: is not supported; for dual-stack bind "::" with socket_address.ipv4_compat: true'
    ]
