"""compile_listener: addresses, filter chains and their matches, http_connection_manager, tcp_proxy."""

# ruff: noqa: E501 (the tables hold whole expected messages; splitting them hides what users read)

from __future__ import annotations

import copy
from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from meshproxy.config.compile import compile_listener
from meshproxy.config.model import ConnectionLimit, HttpConnectionManager, Listener, TcpProxy

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
STDERR_LOG = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog"
TERMINALS = "envoy.filters.network.http_connection_manager or envoy.filters.network.tcp_proxy"

ROUTE_CONFIG = {
    "virtual_hosts": [
        {
            "name": "all",
            "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}],
        }
    ]
}


def hcm(**fields: Any) -> dict[str, Any]:
    config = {
        "@type": HCM,
        "stat_prefix": "in",
        "route_config": copy.deepcopy(ROUTE_CONFIG),
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": without_none(config | fields),
    }


def tcp(**fields: Any) -> dict[str, Any]:
    config = {"@type": TCP, "stat_prefix": "t", "cluster": "c"} | fields
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": without_none(config)}


def without_none(config: dict[str, Any]) -> dict[str, Any]:
    """Fields given as None are left out, so a test can drop a default field."""
    return {k: v for k, v in config.items() if v is not None}


def listener(**fields: Any) -> dict[str, Any]:
    base = {
        "name": "l",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
        "filter_chains": [{"filters": [hcm()]}],
    }
    return base | fields


def compiled(doc: dict[str, Any]) -> tuple[Listener | None, list[str]]:
    problems: list[str] = []
    result = compile_listener(json_format.ParseDict(doc, listener_pb2.Listener()), "l", problems)
    assert (result is None) == bool(problems), "a listener is returned exactly when there is no problem"
    return result, problems


def problems_of(doc: dict[str, Any]) -> list[str]:
    return compiled(doc)[1]


def terminal(doc: dict[str, Any]) -> HttpConnectionManager | TcpProxy:
    result, problems = compiled(doc)
    assert not problems
    assert result is not None
    return result.filter_chains[0].filter


FC0 = "l.filter_chains[0]"
TC = f"{FC0}.filters[0].typed_config"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        pytest.param(listener(name=""), ["l.name: is required"], id="name"),
        pytest.param(
            {"name": "l", "filter_chains": [{"filters": [hcm()]}]},
            ["l.address: is required"],
            id="no-address",
        ),
        pytest.param(
            listener(address={"pipe": {"path": "/run/s"}}),
            [
                "l.address: pipe addresses are not supported; give a socket_address with address and port_value"
            ],
            id="pipe",
        ),
        pytest.param(
            listener(address={"socket_address": {"address": "0.0.0.0", "named_port": "http"}}),
            ["l.address.socket_address.named_port: named ports are not supported; use port_value"],
            id="named-port",
        ),
        pytest.param(
            listener(address={"socket_address": {"address": "localhost", "port_value": 80}}),
            [
                'l.address.socket_address.address: "localhost" is not an IP address; a listener binds to an IP address'
            ],
            id="host-name",
        ),
        pytest.param(
            listener(address={"socket_address": {"address": "0.0.0.0", "port_value": 80, "protocol": "UDP"}}),
            ["l.address.socket_address.protocol: only TCP is supported"],
            id="udp",
        ),
        pytest.param(
            listener(listener_filters=[{"name": "envoy.filters.listener.proxy_protocol"}]),
            [
                'l.listener_filters[0]: "envoy.filters.listener.proxy_protocol" is not supported; meshproxy accepts '
                "envoy.filters.listener.tls_inspector, envoy.filters.listener.http_inspector, "
                "envoy.filters.listener.original_dst"
            ],
            id="listener-filter",
        ),
        pytest.param(
            listener(filter_chains=[]),
            ["l.filter_chains: a listener needs at least one filter chain or a default_filter_chain"],
            id="no-chains",
        ),
        pytest.param(
            listener(filter_chains=[{"filters": []}]),
            [f"{FC0}.filters: needs one terminal filter: {TERMINALS}"],
            id="no-filters",
        ),
        pytest.param(
            listener(filter_chains=[{"filters": [{"name": "envoy.filters.network.rbac"}, hcm()]}]),
            [
                f'{FC0}.filters[0]: network filter "envoy.filters.network.rbac" without a typed_config is not '
                f"supported; meshproxy runs {TERMINALS}"
            ],
            id="other-network-filter",
        ),
        pytest.param(
            listener(filter_chains=[{"filters": [hcm(), tcp()]}]),
            [f"{FC0}.filters[1]: a filter chain has exactly one terminal filter, and this is a second one"],
            id="two-terminals",
        ),
        pytest.param(
            listener(
                filter_chains=[
                    {"filters": [hcm()], "transport_socket": {"name": "envoy.transport_sockets.tls"}}
                ]
            ),
            [
                f'{FC0}.transport_socket.typed_config: "envoy.transport_sockets.tls" is not supported here; '
                "use a DownstreamTlsContext or raw_buffer"
            ],
            id="transport-socket",
        ),
        pytest.param(
            listener(
                filter_chains=[
                    {
                        "filter_chain_match": {
                            "address_suffix": "0.0.0.1",
                            "direct_source_prefix_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}],
                            "prefix_ranges": [{"address_prefix": "10.0.0.300", "prefix_len": 8}],
                            "source_ports": [0],
                        },
                        "filters": [hcm()],
                    }
                ]
            ),
            [
                f"{FC0}.filter_chain_match.address_suffix: is not supported in a filter_chain_match",
                f"{FC0}.filter_chain_match.direct_source_prefix_ranges: is not supported in a filter_chain_match",
                f"{FC0}.filter_chain_match.source_ports[0]: port 0 is out of range; use 1..65535",
                f'{FC0}.filter_chain_match.prefix_ranges[0]: "10.0.0.300/8" is not an IP network',
            ],
            id="unsupported-chain-match",
        ),
        pytest.param(
            listener(filter_chains=[{"filter_chain_match": {"destination_port": 0}, "filters": [hcm()]}]),
            [f"{FC0}.filter_chain_match.destination_port: port 0 is out of range; use 1..65535"],
            id="destination-port",
        ),
        pytest.param(
            listener(
                filter_chains=[{"filter_chain_match": {"server_names": ["*example.com"]}, "filters": [hcm()]}]
            ),
            [
                f'{FC0}.filter_chain_match.server_names[0]: "*example.com": only a leading "*." wildcard is '
                'supported ("*.example.com")'
            ],
            id="partial-wildcard",
        ),
        pytest.param(
            listener(
                filter_chains=[{"filter_chain_match": {"transport_protocol": "quic"}, "filters": [hcm()]}]
            ),
            [
                f'{FC0}.filter_chain_match.transport_protocol: "quic" is not supported; use "raw_buffer" or "tls"'
            ],
            id="transport-protocol",
        ),
        pytest.param(
            listener(filter_chains=[{"filters": [hcm()]}, {"name": "again", "filters": [tcp()]}]),
            [
                "l.filter_chains[1].filter_chain_match: matches the same connections as filter_chains[0]; "
                "Envoy rejects filter chains with identical matching rules"
            ],
            id="duplicate-match",
        ),
        pytest.param(
            listener(
                filter_chains=[
                    {"filter_chain_match": {"server_names": ["a.example", "b.example"]}, "filters": [hcm()]},
                    {"filter_chain_match": {"server_names": ["b.example"]}, "filters": [tcp()]},
                ]
            ),
            [
                "l.filter_chains[1].filter_chain_match: matches the same connections as filter_chains[0]; "
                "Envoy rejects filter chains with identical matching rules"
            ],
            id="overlapping-server-names",
        ),
    ],
)
def test_listener_rejections(doc: dict[str, Any], expected: list[str]) -> None:
    assert problems_of(doc) == expected


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        pytest.param(hcm(stat_prefix=""), [f"{TC}.stat_prefix: is required"], id="stat-prefix"),
        pytest.param(
            hcm(codec_type="HTTP3"),
            [f"{TC}.codec_type: HTTP3 is not supported; use AUTO, HTTP1 or HTTP2"],
            id="http3",
        ),
        pytest.param(
            hcm(route_config=None, rds={"route_config_name": "r"}),
            [f"{TC}.rds.config_source: only ads: {{}} is supported (routes over the ADS stream)"],
            id="rds-not-ads",
        ),
        pytest.param(
            hcm(route_config=None), [f"{TC}: needs an inline route_config or rds"], id="no-route-config"
        ),
        pytest.param(
            hcm(http_filters=[]),
            [f"{TC}.http_filters: needs the router filter (envoy.filters.http.router) as its last entry"],
            id="no-http-filters",
        ),
        pytest.param(
            hcm(
                http_filters=[
                    {"name": "envoy.filters.http.router"},
                    {"name": "envoy.filters.http.lua"},
                ]
            ),
            [
                f"{TC}.http_filters[0]: the router must be the last http filter",
                f'{TC}.http_filters[1]: "envoy.filters.http.lua" is last, but the last http filter must be the '
                "router (envoy.filters.http.router)",
            ],
            id="router-not-last",
        ),
        pytest.param(
            hcm(http_filters=[{"name": "envoy.filters.http.lua"}, {"name": "envoy.filters.http.router"}]),
            [
                f'{TC}.http_filters[0]: http filter "envoy.filters.http.lua" (no typed_config) is not supported; '
                "meshproxy runs those of docs/configuration.md#http-filters (mark a filter is_optional to "
                "have it skipped)"
            ],
            id="other-http-filter",
        ),
        pytest.param(
            hcm(access_log=[{"name": "envoy.access_loggers.stderr", "typed_config": {"@type": STDERR_LOG}}]),
            [
                f'{TC}.access_log[0]: "{STDERR_LOG}" is not supported; use envoy.access_loggers.file '
                "(FileAccessLog) or envoy.access_loggers.stdout (StdoutAccessLog)"
            ],
            id="access-log-type",
        ),
        pytest.param(
            hcm(
                access_log=[
                    {
                        "name": "envoy.access_loggers.file",
                        "filter": {"not_health_check_filter": {}},
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
                        },
                    }
                ]
            ),
            [
                f"{TC}.access_log[0].filter: access log filters are not supported; remove the filter to log every request",
                f"{TC}.access_log[0].typed_config.path: is required",
            ],
            id="access-log-filter-and-path",
        ),
        pytest.param(
            hcm(max_request_headers_kb=8193),
            [f"{TC}.max_request_headers_kb: 8193 is out of range; use 1..8192"],
            id="max-headers",
        ),
        pytest.param(
            hcm(stream_idle_timeout="-1s"),
            [f"{TC}.stream_idle_timeout: must not be negative (got -1s)"],
            id="negative-duration",
        ),
        pytest.param(tcp(stat_prefix=""), [f"{TC}.stat_prefix: is required"], id="tcp-stat-prefix"),
        pytest.param(
            tcp(cluster=None), [f"{TC}: a tcp_proxy needs cluster or weighted_clusters"], id="tcp-no-cluster"
        ),
        pytest.param(
            tcp(cluster=None, weighted_clusters={"clusters": [{"name": "a", "weight": 0}]}),
            [
                f"{TC}.weighted_clusters.clusters[0].weight: must be at least 1",
                f"{TC}.weighted_clusters: the sum of the cluster weights must be greater than 0",
            ],
            id="tcp-weight",
        ),
        pytest.param(
            tcp(cluster=None, weighted_clusters={"clusters": []}),
            [f"{TC}.weighted_clusters.clusters: needs at least one cluster"],
            id="tcp-no-weighted",
        ),
    ],
)
def test_terminal_filter_rejections(filter_: dict[str, Any], expected: list[str]) -> None:
    assert problems_of(listener(filter_chains=[{"filters": [filter_]}])) == expected


def test_listener_compiles_chains_default_chain_and_buffer_limit() -> None:
    doc = listener(
        per_connection_buffer_limit_bytes=4096,
        listener_filters=[
            {"name": "envoy.filters.listener.tls_inspector"},
            {
                "name": "anything",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
                },
            },
        ],
        filter_chains=[
            {
                "name": "web",
                "filter_chain_match": {
                    "destination_port": 8080,
                    "server_names": ["API.example.com", "*.example.com"],
                    "transport_protocol": "tls",
                    "application_protocols": ["h2", "http/1.1"],
                },
                "filters": [hcm()],
            }
        ],
        default_filter_chain={"filters": [tcp()]},
    )
    result, problems = compiled(doc)
    assert problems == []
    assert result is not None
    assert result.buffer_limit == 4096
    match = result.filter_chains[0].match
    assert (match.destination_port, match.server_names) == (8080, ("api.example.com", "*.example.com"))
    assert (match.transport_protocol, match.application_protocols) == ("tls", ("h2", "http/1.1"))
    assert result.default_filter_chain is not None
    assert isinstance(result.default_filter_chain.filter, TcpProxy)


def test_listener_port_zero_is_allowed_for_an_ephemeral_bind() -> None:
    result, _ = compiled(listener(address={"socket_address": {"address": "::1", "port_value": 0}}))
    assert result is not None
    assert (result.address.host, result.address.port) == ("::1", 0)


def test_http_connection_manager_defaults_follow_envoy() -> None:
    manager = terminal(listener())
    assert isinstance(manager, HttpConnectionManager)
    assert manager.max_request_headers_bytes == 60 * 1024
    assert (manager.idle_timeout, manager.stream_idle_timeout) == (3600.0, 300.0)
    assert (manager.request_timeout, manager.drain_timeout) == (0.0, 5.0)
    assert manager.generate_request_id is True
    assert manager.use_remote_address is False  # Envoy's default
    assert manager.access_logs == ()


def test_http_connection_manager_fields() -> None:
    manager = terminal(
        listener(
            filter_chains=[
                {
                    "filters": [
                        hcm(
                            codec_type="HTTP1",
                            max_request_headers_kb=8192,
                            common_http_protocol_options={"idle_timeout": "0s"},
                            stream_idle_timeout="1.5s",
                            request_timeout="10s",
                            drain_timeout="0.25s",
                            generate_request_id=False,
                            use_remote_address=True,
                            server_name="edge",
                            access_log=[
                                {
                                    "name": "envoy.access_loggers.stdout",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
                                    },
                                }
                            ],
                            http_filters=[
                                {"name": "envoy.filters.http.lua", "is_optional": True},
                                {"name": "envoy.filters.http.fault", "disabled": True},
                                {"name": "envoy.filters.http.router"},
                            ],
                        )
                    ]
                }
            ]
        )
    )
    assert isinstance(manager, HttpConnectionManager)
    assert manager.max_request_headers_bytes == 8192 * 1024
    assert (manager.idle_timeout, manager.stream_idle_timeout) == (0.0, 1.5)
    assert (manager.request_timeout, manager.drain_timeout) == (10.0, 0.25)
    assert (manager.generate_request_id, manager.use_remote_address, manager.server_name) == (
        False,
        True,
        "edge",
    )
    assert [log.path for log in manager.access_logs] == ["/dev/stdout"]


@pytest.mark.parametrize(("idle_timeout", "expected"), [(None, 3600.0), ("0s", 0.0), ("90s", 90.0)])
def test_tcp_proxy_idle_timeout(idle_timeout: str | None, expected: float) -> None:
    fields = {} if idle_timeout is None else {"idle_timeout": idle_timeout}
    proxy = terminal(listener(filter_chains=[{"filters": [tcp(**fields)]}]))
    assert isinstance(proxy, TcpProxy)
    assert (proxy.cluster, proxy.idle_timeout) == ("c", expected)


def test_tcp_proxy_weighted_clusters() -> None:
    weighted = {"clusters": [{"name": "a", "weight": 1}, {"name": "b", "weight": 3}]}
    proxy = terminal(listener(filter_chains=[{"filters": [tcp(cluster=None, weighted_clusters=weighted)]}]))
    assert isinstance(proxy, TcpProxy)
    assert proxy.cluster is None
    assert [(w.name, w.weight) for w in proxy.weighted_clusters] == [("a", 1), ("b", 3)]
    assert proxy.total_weight == 4


CONNECTION_LIMIT = "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit"


def connection_limit(**fields: Any) -> dict[str, Any]:
    config = {"@type": CONNECTION_LIMIT, "stat_prefix": "cl", "max_connections": 3} | fields
    return {"name": "envoy.filters.network.connection_limit", "typed_config": without_none(config)}


@pytest.mark.parametrize("chain_terminal", [hcm, tcp])
def test_connection_limit_before_the_terminal(chain_terminal: Any) -> None:
    doc = listener(filter_chains=[{"filters": [connection_limit(delay="0.25s"), chain_terminal()]}])
    result, problems = compiled(doc)
    assert not problems and result is not None
    chain = result.filter_chains[0]
    assert chain.connection_limit == ConnectionLimit("cl", 3, 0.25)
    assert isinstance(chain.filter, HttpConnectionManager if chain_terminal is hcm else TcpProxy)


def test_no_connection_limit_by_default() -> None:
    result, _ = compiled(listener())
    assert result is not None and result.filter_chains[0].connection_limit is None


CL = f"{FC0}.filters[0].typed_config"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param(
            [connection_limit(max_connections=None), hcm()],
            [f"{CL}.max_connections: is required"],
            id="no-max",
        ),
        pytest.param(
            [connection_limit(max_connections=0), hcm()],
            [f"{CL}.max_connections: must be at least 1"],
            id="zero-max",
        ),
        pytest.param(
            [connection_limit(stat_prefix=None), hcm()], [f"{CL}.stat_prefix: is required"], id="no-prefix"
        ),
        pytest.param(
            [connection_limit(runtime_enabled={"default_value": True, "runtime_key": "k"}), hcm()],
            [
                f"{CL}.runtime_enabled: is not supported (meshproxy has no runtime layer); leave it out: the limit is always on"
            ],
            id="runtime-enabled",
        ),
        pytest.param(
            [connection_limit(delay="-1s"), hcm()],
            [f"{CL}.delay: must not be negative (got -1s)"],
            id="negative-delay",
        ),
        pytest.param(
            [hcm(), connection_limit()],
            [f"{FC0}.filters[1]: connection_limit must come before the terminal filter"],
            id="after-terminal",
        ),
        pytest.param(
            [connection_limit(), connection_limit(), tcp()],
            [
                f"{FC0}.filters[1]: a filter chain takes at most one connection_limit, and this is a second one"
            ],
            id="twice",
        ),
        pytest.param(
            [connection_limit()],
            [f"{FC0}.filters: needs one terminal filter: {TERMINALS}"],
            id="no-terminal",
        ),
    ],
)
def test_connection_limit_problems(filters: list[dict[str, Any]], expected: list[str]) -> None:
    assert problems_of(listener(filter_chains=[{"filters": filters}])) == expected
