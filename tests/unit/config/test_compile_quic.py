"""compile_quic: QUIC listeners and HTTP/3 clusters, and every refusal naming its field."""

# ruff: noqa: E501 (the tables hold whole expected messages; splitting them hides what users read)

from __future__ import annotations

import copy
from typing import Any

import pytest
from certs import make_ca, make_leaf
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from meshproxy.config.compile import compile_cluster, compile_listener
from meshproxy.config.model import QuicOptions

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
QUIC_DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport"
QUIC_UP = "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport"
TLS_DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
LEAF = make_leaf(make_ca())
CERT = {
    "certificate_chain": {"inline_string": LEAF.cert_pem.decode()},
    "private_key": {"inline_string": LEAF.key_pem.decode()},
}
CHAIN = "l.filter_chains[0]"
TLS = f"{CHAIN}.transport_socket.typed_config.downstream_tls_context.common_tls_context"


def quic_listener() -> dict[str, Any]:
    manager = {
        "@type": HCM,
        "stat_prefix": "h3",
        "codec_type": "HTTP3",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "a",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}],
                }
            ]
        },
        "http_filters": [{"name": "router", "typed_config": {"@type": ROUTER}}],
    }
    return {
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0, "protocol": "UDP"}},
        "udp_listener_config": {"quic_options": {}},
        "filter_chains": [
            {
                "filters": [{"name": "hcm", "typed_config": manager}],
                "transport_socket": {
                    "name": "quic",
                    "typed_config": {
                        "@type": QUIC_DOWN,
                        "downstream_tls_context": {"common_tls_context": {"tls_certificates": [CERT]}},
                    },
                },
            }
        ],
    }


def listener_problems(doc: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    result = compile_listener(json_format.ParseDict(doc, listener_pb2.Listener()), "l", problems)
    assert (result is None) == bool(problems)
    return problems


def test_a_quic_listener_compiles_with_envoy_defaults() -> None:
    doc = quic_listener()
    doc["udp_listener_config"]["quic_options"] = {
        "idle_timeout": "30s",
        "quic_protocol_options": {"max_concurrent_streams": 7},
    }
    problems: list[str] = []
    result = compile_listener(json_format.ParseDict(doc, listener_pb2.Listener()), "l", problems)
    assert not problems and result is not None
    assert result.address.protocol == "UDP"
    assert result.quic == QuicOptions(idle_timeout=30.0, max_concurrent_streams=7)
    chain = result.filter_chains[0]
    assert chain.tls is not None and chain.tls.server_side
    assert chain.filter.codec_type == "HTTP3"  # type: ignore[union-attr]


def _edit(path: str, value: Any) -> Any:
    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value

    return apply


HCM_AT = "filter_chains.0.filters.0.typed_config"
TRANSPORT = "filter_chains.0.transport_socket"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            _edit("udp_listener_config", {}),
            [
                "l.udp_listener_config.quic_options: is required: meshproxy's UDP listeners serve QUIC (HTTP/3) only"
            ],
            id="no-quic-options",
        ),
        pytest.param(
            _edit("address.socket_address.protocol", "TCP"),
            [
                "l.address.socket_address.protocol: a QUIC listener (udp_listener_config) binds UDP; set protocol: UDP"
            ],
            id="tcp-address",
        ),
        pytest.param(
            _edit(f"{HCM_AT}.codec_type", "HTTP2"),
            [
                f"{CHAIN}.filters[0].typed_config.codec_type: a QUIC listener's connection manager needs codec_type HTTP3"
            ],
            id="http2-codec",
        ),
        pytest.param(
            _edit(
                TRANSPORT,
                {
                    "name": "tls",
                    "typed_config": {"@type": TLS_DOWN, "common_tls_context": {"tls_certificates": [CERT]}},
                },
            ),
            [f"{CHAIN}.transport_socket: a QUIC listener's filter chain needs a QuicDownstreamTransport"],
            id="tcp-tls",
        ),
        pytest.param(
            _edit(f"{TRANSPORT}.typed_config.enable_early_data", True),
            [
                f"{CHAIN}.transport_socket.typed_config.enable_early_data: is not supported: 0-RTT is off: early data can be replayed (RFC 9001 §9.2)"
            ],
            id="0-rtt",
        ),
        pytest.param(
            _edit(
                f"{TRANSPORT}.typed_config.downstream_tls_context.common_tls_context.tls_params",
                {"tls_maximum_protocol_version": "TLSv1_2"},
            ),
            [f"{TLS}.tls_params.tls_maximum_protocol_version: QUIC is TLS 1.3 only (RFC 9001 §4.2)"],
            id="tls12",
        ),
        pytest.param(
            _edit(
                f"{TRANSPORT}.typed_config.downstream_tls_context.common_tls_context.tls_params",
                {"cipher_suites": ["ECDHE-ECDSA-AES128-GCM-SHA256"]},
            ),
            [
                f"{TLS}.tls_params.cipher_suites: ECDHE-ECDSA-AES128-GCM-SHA256 not available over QUIC; use TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256"
            ],
            id="tls12-suite",
        ),
        pytest.param(
            _edit("udp_listener_config.quic_options.enabled", {"default_value": False}),
            [
                "l.udp_listener_config.quic_options.enabled.default_value: a QUIC listener that is not enabled is not supported; remove the listener"
            ],
            id="disabled",
        ),
        pytest.param(
            _edit("udp_listener_config.quic_options.quic_protocol_options", {"max_packet_length": 1000}),
            [
                "l.udp_listener_config.quic_options.quic_protocol_options.max_packet_length: 1000 is out of range; use 1200..65527"
            ],
            id="small-packets",
        ),
        pytest.param(
            _edit("udp_listener_config.quic_options.quic_protocol_options", {"idle_network_timeout": "5s"}),
            [
                "l.udp_listener_config.quic_options.quic_protocol_options.idle_network_timeout: on a listener, use quic_options.idle_timeout"
            ],
            id="idle-network-timeout",
        ),
        pytest.param(
            _edit("udp_listener_config.quic_options.send_disable_active_migration", True),
            [
                "l.udp_listener_config.quic_options.send_disable_active_migration: is not supported: clients may always migrate (RFC 9000 §9)"
            ],
            id="no-migration",
        ),
    ],
)
def test_quic_listener_refusals(edit: Any, expected: list[str]) -> None:
    doc = quic_listener()
    edit(doc)
    assert listener_problems(doc) == expected


def test_a_quic_listener_takes_one_filter_chain() -> None:
    doc = quic_listener()
    doc["filter_chains"].append(copy.deepcopy(doc["filter_chains"][0]))
    doc["filter_chains"][1]["filter_chain_match"] = {"server_names": ["b.example"]}
    assert (
        "l.filter_chains: a QUIC listener takes exactly one filter chain (filter_chains or default_filter_chain), not 2"
        in listener_problems(doc)
    )


def test_a_quic_transport_on_a_tcp_listener_is_refused() -> None:
    doc = quic_listener()
    del doc["udp_listener_config"]
    doc["address"]["socket_address"]["protocol"] = "TCP"
    assert listener_problems(doc) == [
        f"{CHAIN}.transport_socket: QuicDownstreamTransport needs a UDP listener with udp_listener_config.quic_options",
        f"{CHAIN}.filters[0].typed_config.codec_type: HTTP3 needs a QUIC listener (udp_listener_config.quic_options)",
    ]


def quic_cluster(http3: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "c",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "c",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 443}}
                            }
                        }
                    ]
                }
            ],
        },
        "transport_socket": {
            "name": "quic",
            "typed_config": {"@type": QUIC_UP, "upstream_tls_context": {"sni": "b"}},
        },
    }
    if http3:
        doc["typed_extension_protocol_options"] = {
            OPTIONS: {
                "@type": "type.googleapis.com/" + OPTIONS,
                "explicit_http_config": {
                    "http3_protocol_options": {
                        "quic_protocol_options": {"max_concurrent_streams": 9, "idle_network_timeout": "7s"}
                    }
                },
            }
        }
    return doc


def cluster_problems(doc: dict[str, Any]) -> tuple[Any, list[str]]:
    problems: list[str] = []
    result = compile_cluster(json_format.ParseDict(doc, cluster_pb2.Cluster()), "c", problems)
    return result, problems


def test_an_http3_cluster_compiles_onto_the_multiplexed_path() -> None:
    result, problems = cluster_problems(quic_cluster())
    assert not problems
    assert result.http3 == QuicOptions(idle_timeout=7.0, max_concurrent_streams=9)
    assert result.http2 is not None and result.http2.max_concurrent_streams == 9
    assert result.tls is not None and result.tls.sni == "b"


def test_http3_and_its_transport_go_together() -> None:
    _, problems = cluster_problems(quic_cluster(http3=False))
    assert problems == [
        f'c.typed_extension_protocol_options["{OPTIONS}"].explicit_http_config.http3_protocol_options: is required with a QuicUpstreamTransport (a QUIC cluster speaks HTTP/3), or auto_config.http3_protocol_options for HTTP/3 with HTTP/2 over TCP as fallback'
    ]
    doc = quic_cluster()
    del doc["transport_socket"]
    _, problems = cluster_problems(doc)
    assert problems == [
        f'c.typed_extension_protocol_options["{OPTIONS}"].explicit_http_config.http3_protocol_options: upstream HTTP/3 needs a QuicUpstreamTransport, and ALPN auto_config is not supported; use HTTP/1.1, HTTP/2 or HTTP/3 options'
    ]


def test_auto_config_is_http3_with_http2_over_tcp_as_fallback() -> None:
    doc = quic_cluster(http3=False)
    doc["typed_extension_protocol_options"] = {
        OPTIONS: {
            "@type": "type.googleapis.com/" + OPTIONS,
            "auto_config": {
                "http2_protocol_options": {"max_concurrent_streams": 50},
                "http3_protocol_options": {},
            },
        }
    }
    result, problems = cluster_problems(doc)
    assert not problems
    assert result.http3 == QuicOptions() and result.http3_fallback
    assert result.http2 is not None and result.http2.max_concurrent_streams == 50
    del doc["transport_socket"]
    _, problems = cluster_problems(doc)
    assert problems == [
        f'c.typed_extension_protocol_options["{OPTIONS}"].auto_config: upstream HTTP/3 needs a QuicUpstreamTransport, and ALPN auto_config is not supported; use HTTP/1.1, HTTP/2 or HTTP/3 options'
    ]
