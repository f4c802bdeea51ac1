"""compile_cluster: discovery types, load assignment, upstream HTTP protocol options (load
balancing, breakers, outlier detection, health checks, EDS: test_compile_lb, test_compile_policy)."""

# ruff: noqa: E501 (the tables hold whole expected messages; splitting them hides what users read)

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import json_format

from meshproxy.config.compile import compile_cluster
from meshproxy.config.model import (
    Cluster,
    Endpoint,
    Locality,
    LocalityLbEndpoints,
    OriginalDstConfig,
    SocketAddress,
    TcpKeepalive,
)

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
NO_TLS_TYPE = '"envoy.transport_sockets.tls" is not supported here; use an UpstreamTlsContext or raw_buffer'
H3 = "upstream HTTP/3 needs a QuicUpstreamTransport, and ALPN auto_config is not supported; use HTTP/1.1, HTTP/2 or HTTP/3 options"


def endpoint(host: str = "10.0.0.1", port: int = 80, **fields: Any) -> dict[str, Any]:
    return {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}, **fields}


def cluster(*lb_endpoints: dict[str, Any], **fields: Any) -> dict[str, Any]:
    assignment = {"cluster_name": "c", "endpoints": [{"lb_endpoints": list(lb_endpoints) or [endpoint()]}]}
    return {"name": "c", "type": "STATIC", "load_assignment": assignment} | fields


def http_options(**options: Any) -> dict[str, Any]:
    return {HTTP_OPTIONS: {"@type": f"type.googleapis.com/{HTTP_OPTIONS}", **options}}


def compiled(doc: dict[str, Any]) -> tuple[Cluster | None, list[str]]:
    problems: list[str] = []
    result = compile_cluster(json_format.ParseDict(doc, cluster_pb2.Cluster()), "c", problems)
    assert (result is None) == bool(problems), "a cluster is returned exactly when there is no problem"
    return result, problems


def valid(doc: dict[str, Any]) -> Cluster:
    result, problems = compiled(doc)
    assert problems == []
    assert result is not None
    return result


E0 = "c.load_assignment.endpoints[0]"
EP0 = f"{E0}.lb_endpoints[0]"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        pytest.param(cluster(name=""), ["c.name: is required"], id="name"),
        pytest.param(
            cluster(endpoint("a.example"), endpoint("b.example"), type="LOGICAL_DNS"),
            [
                "c.load_assignment: a LOGICAL_DNS cluster needs exactly one locality with exactly one lb_endpoint"
            ],
            id="logical-dns-two-endpoints",
        ),
        pytest.param(
            cluster(type="ORIGINAL_DST"),
            [
                "c.lb_policy: ROUND_ROBIN is not valid for a cluster of type ORIGINAL_DST; "
                "only CLUSTER_PROVIDED is allowed",
                "c.load_assignment: an ORIGINAL_DST cluster has no load assignment: "
                "its hosts are the connections' destinations",
            ],
            id="original-dst-needs-cluster-provided-and-no-endpoints",
        ),
        pytest.param(
            {
                "name": "c",
                "type": "ORIGINAL_DST",
                "lb_policy": "CLUSTER_PROVIDED",
                "original_dst_lb_config": {
                    "http_header_name": "x-dst",
                    "metadata_key": {"key": "k", "path": [{"key": "p"}]},
                    "upstream_port_override": 70000,
                },
                "cleanup_interval": "0s",
                "upstream_bind_config": {"source_address": {"address": "localhost", "port_value": 0}},
            },
            [
                "c.original_dst_lb_config.http_header_name: is not supported; the header is x-envoy-original-dst-host",
                "c.original_dst_lb_config.metadata_key: is not supported; meshproxy reads no endpoint metadata",
                "c.original_dst_lb_config.upstream_port_override: port 70000 is out of range; use 1..65535",
                "c.cleanup_interval: must be greater than 0",
                'c.upstream_bind_config.source_address.address: "localhost" is not an IP address',
            ],
            id="original-dst-config",
        ),
        pytest.param(
            cluster(original_dst_lb_config={"use_http_header": True}),
            ["c.original_dst_lb_config: is only for a cluster of type ORIGINAL_DST"],
            id="original-dst-config-elsewhere",
        ),
        pytest.param(
            {"name": "c", "cluster_type": {"name": "envoy.clusters.aggregate"}},
            [
                "c.cluster_type: custom cluster types are not supported; use type STATIC, STRICT_DNS, LOGICAL_DNS, EDS or ORIGINAL_DST"
            ],
            id="custom-type",
        ),
        pytest.param(
            cluster(lb_policy="CLUSTER_PROVIDED"),
            [
                "c.lb_policy: CLUSTER_PROVIDED is not supported; use ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV"
            ],
            id="cluster-provided",
        ),
        pytest.param(
            cluster(transport_socket={"name": "envoy.transport_sockets.tls"}),
            [f"c.transport_socket.typed_config: {NO_TLS_TYPE}"],
            id="transport-socket",
        ),
        pytest.param(
            cluster(transport_socket_matches=[{"name": "tls", "match": {}}]),
            ["c.transport_socket_matches: is not supported; give one transport_socket"],
            id="transport-socket-matches",
        ),
        pytest.param(
            cluster(connect_timeout="0s"), ["c.connect_timeout: must be greater than 0"], id="connect-timeout"
        ),
        pytest.param(
            cluster(dns_refresh_rate="0s"), ["c.dns_refresh_rate: must be at least 1ms"], id="dns-refresh"
        ),
        pytest.param(
            cluster(endpoint("backend.local")),
            [
                f'{EP0}.endpoint.address.socket_address.address: "backend.local" is not an IP address; STATIC '
                "cluster endpoints must be IP addresses; use type STRICT_DNS for host names"
            ],
            id="static-host-name",
        ),
        pytest.param(
            cluster(endpoint(port=0), endpoint(port=65536)),
            [
                f"{EP0}.endpoint.address.socket_address.port_value: port 0 is out of range; use 1..65535",
                f"{E0}.lb_endpoints[1].endpoint.address.socket_address.port_value: port 65536 is out of range; "
                "use 1..65535",
            ],
            id="ports",
        ),
        pytest.param(
            cluster(
                {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "named_port": "http"}}}}
            ),
            [
                f"{EP0}.endpoint.address.socket_address.named_port: named ports are not supported; use port_value"
            ],
            id="named-port",
        ),
        pytest.param(
            cluster({"endpoint": {}}),
            [
                f"{EP0}.endpoint.address: an empty address is not supported; give a socket_address with address and port_value"
            ],
            id="no-address",
        ),
        pytest.param(
            cluster({"endpoint_name": "e"}),
            [f"{EP0}.endpoint_name: needs an endpoint with an address (endpoint_name is not supported)"],
            id="endpoint-name",
        ),
        pytest.param(
            cluster(endpoint(load_balancing_weight=0)),
            [f"{EP0}.load_balancing_weight: must be at least 1"],
            id="endpoint-weight",
        ),
        pytest.param(
            cluster(
                load_assignment={
                    "endpoints": [
                        {"load_balancing_weight": 0, "priority": 129, "lb_endpoints": [endpoint()]},
                        {"leds_cluster_locality_config": {"leds_collection_name": "x"}},
                    ]
                }
            ),
            [
                f"{E0}.load_balancing_weight: must be at least 1",
                f"{E0}.priority: 129 is out of range; use 0..128",
                "c.load_assignment.endpoints[1].leds_cluster_locality_config: is not supported; list the endpoints in "
                "lb_endpoints",
            ],
            id="locality",
        ),
        pytest.param(
            cluster(
                common_http_protocol_options={"idle_timeout": "1s"},
                typed_extension_protocol_options=http_options(),
            ),
            [
                "c.common_http_protocol_options: cannot be set both here and in typed_extension_protocol_options; "
                f"keep the one in {HTTP_OPTIONS}"
            ],
            id="options-twice",
        ),
        pytest.param(
            cluster(
                typed_extension_protocol_options=http_options(
                    explicit_http_config={"http3_protocol_options": {}}
                )
            ),
            [
                f'c.typed_extension_protocol_options["{HTTP_OPTIONS}"].explicit_http_config.http3_protocol_options: {H3}'
            ],
            id="explicit-http3",
        ),
        pytest.param(
            cluster(typed_extension_protocol_options=http_options(auto_config={})),
            [f'c.typed_extension_protocol_options["{HTTP_OPTIONS}"].auto_config: {H3}'],
            id="auto-config",
        ),
        pytest.param(
            cluster(
                typed_extension_protocol_options={
                    HTTP_OPTIONS: {"@type": "type.googleapis.com/google.protobuf.Empty"}
                }
            ),
            [
                f'c.typed_extension_protocol_options["{HTTP_OPTIONS}"]: "type.googleapis.com/google.protobuf.Empty" is not an {HTTP_OPTIONS}'
            ],
            id="options-type",
        ),
        pytest.param(
            cluster(
                typed_extension_protocol_options=http_options(
                    common_http_protocol_options={"idle_timeout": "-1s"}
                )
            ),
            [
                f'c.typed_extension_protocol_options["{HTTP_OPTIONS}"].common_http_protocol_options.idle_timeout: '
                "must not be negative (got -1s)"
            ],
            id="options-negative-idle",
        ),
    ],
)
def test_cluster_rejections(doc: dict[str, Any], expected: list[str]) -> None:
    assert compiled(doc)[1] == expected


def test_cluster_defaults_follow_envoy() -> None:
    result = valid({"name": "empty"})
    assert result == Cluster("empty", "STATIC", ())
    assert (result.connect_timeout, result.dns_refresh_rate, result.idle_timeout) == (5.0, 5.0, 3600.0)
    assert (result.max_requests_per_connection, result.buffer_limit, result.lb.policy) == (
        0,
        1024 * 1024,
        "ROUND_ROBIN",
    )


def test_a_cluster_without_endpoints_is_allowed() -> None:
    assert (
        valid({"name": "c", "type": "STRICT_DNS", "load_assignment": {"cluster_name": "c"}}).localities == ()
    )


def test_load_assignment_localities_endpoints_weights_priorities() -> None:
    doc = cluster(
        load_assignment={
            "endpoints": [
                {
                    "locality": {"region": "r", "zone": "z", "sub_zone": "s"},
                    "load_balancing_weight": 7,
                    "lb_endpoints": [
                        endpoint("10.0.0.1", 8080, load_balancing_weight=3, health_status="HEALTHY"),
                        endpoint("2001:db8::1", 8080, health_status="DEGRADED"),
                    ],
                },
                {"priority": 2, "lb_endpoints": [endpoint("10.0.0.2", 9090, health_status="UNHEALTHY")]},
            ]
        },
        connect_timeout="0.5s",
        per_connection_buffer_limit_bytes=1000,
    )
    result = valid(doc)
    assert result.localities == (
        LocalityLbEndpoints(
            Locality("r", "z", "s"),
            (
                Endpoint(SocketAddress("10.0.0.1", 8080), 3, "HEALTHY"),
                Endpoint(SocketAddress("2001:db8::1", 8080), 1, "DEGRADED"),
            ),
            weight=7,
        ),
        LocalityLbEndpoints(
            Locality(), (Endpoint(SocketAddress("10.0.0.2", 9090), 1, "UNHEALTHY"),), priority=2
        ),
    )
    assert (result.connect_timeout, result.buffer_limit) == (0.5, 1000)


def test_strict_dns_accepts_host_names() -> None:
    result = valid(cluster(endpoint("reviews.default.svc", 9080), type="STRICT_DNS", dns_refresh_rate="30s"))
    assert result.discovery == "STRICT_DNS"
    assert result.localities[0].endpoints[0].address == SocketAddress("reviews.default.svc", 9080)
    assert result.dns_refresh_rate == 30.0


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, (3600.0, 0), id="defaults"),
        pytest.param(
            {"common_http_protocol_options": {"idle_timeout": "10s", "max_requests_per_connection": 5}},
            (10.0, 5),
            id="on-cluster",
        ),
        pytest.param({"max_requests_per_connection": 9}, (3600.0, 9), id="deprecated-max-requests"),
        pytest.param(
            {
                "typed_extension_protocol_options": http_options(
                    common_http_protocol_options={"idle_timeout": "0s", "max_requests_per_connection": 100},
                    explicit_http_config={"http_protocol_options": {}},
                )
            },
            (0.0, 100),
            id="typed-extension",
        ),
        pytest.param(
            {"typed_extension_protocol_options": http_options(use_downstream_protocol_config={})},
            (3600.0, 0),
            id="use-downstream",
        ),
    ],
)
def test_http_protocol_options(fields: dict[str, Any], expected: tuple[float, int]) -> None:
    result = valid(cluster(**fields))
    assert (result.idle_timeout, result.max_requests_per_connection) == expected


def test_original_dst_cluster_as_istio_writes_its_passthrough() -> None:
    c = valid(
        {
            "name": "InboundPassthroughCluster",
            "type": "ORIGINAL_DST",
            "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": "10s",
            "cleanup_interval": "60s",
            "original_dst_lb_config": {"use_http_header": True, "upstream_port_override": 8080},
            "upstream_bind_config": {"source_address": {"address": "127.0.0.6", "port_value": 0}},
        }
    )
    assert c.discovery == "ORIGINAL_DST" and c.localities == ()
    assert c.original_dst == OriginalDstConfig(
        use_http_header=True, upstream_port_override=8080, cleanup_interval=60.0
    )
    assert c.source_address == SocketAddress("127.0.0.6", 0)
    plain = valid({"name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED"})
    assert plain.original_dst == OriginalDstConfig() and plain.source_address is None


@pytest.mark.parametrize("family", ["AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL"])
def test_logical_dns_takes_one_host_name_and_each_lookup_family(family: str) -> None:
    result = valid(cluster(endpoint("xds.example", 15010), type="LOGICAL_DNS", dns_lookup_family=family))
    assert (result.discovery, result.dns_lookup_family) == ("LOGICAL_DNS", family)
    assert [ep.address.host for loc in result.localities for ep in loc.endpoints] == ["xds.example"]


def test_dns_lookup_family_defaults_to_auto_as_in_envoy() -> None:
    assert valid(cluster(type="STRICT_DNS")).dns_lookup_family == "AUTO"


def _health_checked(**config: Any) -> dict[str, Any]:
    ep = endpoint("10.0.0.1", 8080)
    ep["endpoint"]["health_check_config"] = config
    return cluster(ep)


def test_health_check_config_may_name_the_endpoints_own_port() -> None:
    # Envoy's locality-load-balancing example writes the endpoint's port here.
    assert valid(_health_checked(port_value=8080)).localities[0].endpoints[0].address.port == 8080


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"port_value": 9000},
            f"{EP0}.endpoint.health_check_config.port_value: 9000 is not supported: health checks probe "
            "the endpoint's own port (8080); leave it out or give that port",
        ),
        (
            {"hostname": "other"},
            f"{EP0}.endpoint.health_check_config.hostname: is not supported: health checks probe the "
            "endpoint's own address",
        ),
    ],
)
def test_health_check_config_elsewhere_is_refused(config: dict[str, Any], expected: str) -> None:
    assert compiled(_health_checked(**config))[1] == [expected]


def test_tcp_keepalive_is_kept_and_unset_values_left_to_the_kernel() -> None:
    options = {"tcp_keepalive": {"keepalive_probes": 3, "keepalive_time": 30}}
    assert valid(cluster(upstream_connection_options=options)).tcp_keepalive == TcpKeepalive(3, 30, None)
    assert valid(cluster()).tcp_keepalive is None


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"tcp_keepalive": {"keepalive_interval": 0}},
            "c.upstream_connection_options.tcp_keepalive.keepalive_interval: must be at least 1",
        ),
        (
            {"happy_eyeballs_config": {"first_address_family_version": "V6"}},
            "c.upstream_connection_options.happy_eyeballs_config: is not supported: happy eyeballs is not supported",
        ),
    ],
)
def test_upstream_connection_options_refusals(options: dict[str, Any], expected: str) -> None:
    assert compiled(cluster(upstream_connection_options=options))[1] == [expected]
