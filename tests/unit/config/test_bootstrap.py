"""The whole bootstrap: the example file in YAML and JSON, cross-resource rules, every problem at once."""

# ruff: noqa: E501 (the tables hold whole expected messages; splitting them hides what users read)

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshproxy.config.bootstrap import load_bootstrap, parse_bootstrap
from meshproxy.config.model import Admin, Config, Node, SocketAddress, TcpProxy
from meshproxy.errors import ConfigError

DATA = Path(__file__).parent / "data"
FULL_YAML = DATA / "full.yaml"
FULL_JSON = DATA / "full.json"

HCM_PATH = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
VHOST_PATH = f"{HCM_PATH}.route_config.virtual_hosts[0]"
DEFINED = "defined clusters: database, reviews_v1, reviews_v2"


@pytest.fixture
def doc() -> dict[str, Any]:
    """The example bootstrap as a dict, for a test to break."""
    return yaml.safe_load(FULL_YAML.read_text())


def hcm(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def problems_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_bootstrap(json.dumps(doc))
    return raised.value.problems


def test_full_example_in_yaml_and_json_compile_to_equal_configs() -> None:
    from_yaml = load_bootstrap(FULL_YAML)
    from_json = load_bootstrap(str(FULL_JSON))
    assert from_yaml == from_json
    assert "\t" in FULL_JSON.read_text(), "the JSON example is tab-indented, which YAML would refuse"


def test_the_documented_example_is_the_tested_one() -> None:
    docs = Path(__file__).parents[3] / "docs" / "configuration.md"
    assert FULL_YAML.read_text().strip() in docs.read_text()


def test_full_example_compiles_every_part() -> None:
    config = load_bootstrap(FULL_YAML)
    assert config.node == Node("sidecar~10.0.0.7~reviews-v1.default~default.svc.cluster.local", "reviews")
    assert config.admin == Admin(SocketAddress("127.0.0.1", 15000), "/dev/stdout")
    assert [ln.name for ln in config.listeners] == ["outbound_http", "outbound_tcp"]
    assert [(c.name, c.discovery) for c in config.clusters] == [
        ("reviews_v1", "STATIC"),
        ("reviews_v2", "STRICT_DNS"),
        ("database", "STRICT_DNS"),
    ]
    routes = config.listeners[0].filter_chains[0].filter.route_config.virtual_hosts[0].routes  # type: ignore[union-attr]
    assert [type(r.action).__name__ for r in routes] == [
        "RouteAction",
        "RouteAction",
        "Redirect",
        "DirectResponse",
        "RouteAction",
    ]
    tcp = config.listeners[1].default_filter_chain
    assert tcp is not None
    assert isinstance(tcp.filter, TcpProxy)
    assert config.cluster("database") is config.clusters[2]
    assert config.version == "static"


def test_fields_accepted_without_effect_load_and_refused_fields_are_problems(doc: dict[str, Any]) -> None:
    """The fidelity table's three kinds (meshproxy/config/fidelity.py): accepted fields load
    unchanged; a refused field is a problem naming its path; unknown fields are refused unless
    allowed."""
    doc["stats_flush_interval"] = "5s"
    doc["layered_runtime"] = {"layers": [{"name": "static", "static_layer": {"a": 1}}]}
    hcm(doc)["route_config"]["virtual_hosts"][0]["routes"][0]["decorator"] = {"operation": "reviews"}
    doc["static_resources"]["clusters"][0]["metadata"] = {"filter_metadata": {"x": {"a": 1}}}
    assert parse_bootstrap(json.dumps(doc)) == load_bootstrap(FULL_YAML)

    hcm(doc)["tracing"] = {"custom_tags": [{"tag": "a", "literal": {"value": "b"}}]}
    hcm(doc)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["hedge_policy"] = {
        "initial_requests": 1
    }
    doc["static_resources"]["clusters"][0]["upstream_connection_options"] = {
        "happy_eyeballs_config": {"first_address_family_version": "V6"}
    }
    assert problems_of(doc) == [
        "static_resources.clusters[0].upstream_connection_options.happy_eyeballs_config: is not supported: "
        "happy eyeballs is not supported",
        f"{HCM_PATH}.tracing.custom_tags: is not supported: custom span tags are not supported "
        "(docs/observability.md lists the tags)",
        f"{VHOST_PATH}.routes[0].route.hedge_policy: is not supported: request hedging is not supported",
    ]


def test_unknown_fields_are_refused_unless_allowed(doc: dict[str, Any]) -> None:
    doc["not_an_envoy_field"] = {"anything": [1, 2]}
    doc["static_resources"]["listeners"][0]["made_up"] = True
    hcm(doc)["stat_prefx"] = "typo"
    assert sorted(problems_of(doc)) == [
        'not_an_envoy_field: unknown field: Bootstrap has no field "not_an_envoy_field"',
        f'{HCM_PATH}.stat_prefx: unknown field: HttpConnectionManager has no field "stat_prefx"; '
        'did you mean "stat_prefix"?',
        'static_resources.listeners[0].made_up: unknown field: Listener has no field "made_up"',
    ]
    assert parse_bootstrap(json.dumps(doc), allow_unknown_fields=True) == load_bootstrap(FULL_YAML)


def test_minimal_bootstraps() -> None:
    assert parse_bootstrap("node: {id: n}") == Config(node=Node("n"))
    assert parse_bootstrap("static_resources: null") == Config()


def test_unknown_cluster_is_reported_with_its_field_path(doc: dict[str, Any]) -> None:
    routes = hcm(doc)["route_config"]["virtual_hosts"][0]["routes"]
    routes[4]["route"]["cluster"] = "foo"
    routes[0]["route"]["weighted_clusters"]["clusters"][1]["name"] = "bar"
    doc["static_resources"]["listeners"][1]["default_filter_chain"]["filters"][0]["typed_config"][
        "cluster"
    ] = "db"
    assert problems_of(doc) == [
        f'{VHOST_PATH}.routes[0].route.weighted_clusters.clusters[1].name: unknown cluster "bar" ({DEFINED})',
        f'{VHOST_PATH}.routes[4].route.cluster: unknown cluster "foo" ({DEFINED})',
        'static_resources.listeners[1].default_filter_chain.filters[0].typed_config.cluster: unknown cluster "db" '
        f"({DEFINED})",
    ]


def test_unknown_cluster_when_none_are_defined(doc: dict[str, Any]) -> None:
    doc["static_resources"] = {"listeners": [doc["static_resources"]["listeners"][1]]}
    problems = problems_of(doc)
    assert problems[0] == (
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.weighted_clusters.clusters[0].name: "
        'unknown cluster "database" (no clusters are defined in static_resources)'
    )
    assert len(problems) == 3


def test_a_cluster_that_fails_to_compile_still_counts_as_defined(doc: dict[str, Any]) -> None:
    doc["static_resources"]["clusters"][2]["lb_policy"] = "CLUSTER_PROVIDED"
    assert problems_of(doc) == [
        "static_resources.clusters[2].lb_policy: CLUSTER_PROVIDED is not supported; use ROUND_ROBIN, "
        "LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV"
    ]


def test_names_must_be_unique_and_addresses_distinct(doc: dict[str, Any]) -> None:
    listeners, clusters = doc["static_resources"]["listeners"], doc["static_resources"]["clusters"]
    listeners.append(copy.deepcopy(listeners[1]))
    listeners[2]["address"]["socket_address"]["port_value"] = 15001
    clusters.append(copy.deepcopy(clusters[0]))
    assert problems_of(doc) == [
        'static_resources.clusters[3].name: "reviews_v1" is also the name of clusters[0]; names must be unique',
        'static_resources.listeners[2].name: "outbound_tcp" is also the name of listeners[1]; names must be unique',
        "static_resources.listeners[2].address: 0.0.0.0:15001 is also the address of listeners[0]; "
        "each listener needs its own",
    ]


def test_listeners_on_port_zero_may_share_an_address(doc: dict[str, Any]) -> None:
    for index, listener in enumerate(doc["static_resources"]["listeners"]):
        listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
        listener["name"] = f"l{index}"
    config = parse_bootstrap(json.dumps(doc))
    assert {ln.address for ln in config.listeners} == {SocketAddress("127.0.0.1", 0)}


def test_node_admin_and_dynamic_resources(doc: dict[str, Any]) -> None:
    doc["dynamic_resources"] = {"ads_config": {"api_type": "GRPC"}}
    doc["admin"]["address"]["socket_address"]["address"] = "localhost"
    doc["admin"]["access_log_path"] = "/tmp/admin.log"
    assert problems_of(doc) == [
        'admin.address.socket_address.address: "localhost" is not an IP address; the admin listener binds to an '
        "IP address",
        "admin: give the admin interface one access log: access_log_path or a single access_log",
        "dynamic_resources.ads_config.grpc_services: needs exactly one entry (got 0): "
        "{envoy_grpc: {cluster_name: ...}}",
    ]


def test_admin_access_log_path_and_no_admin() -> None:
    config = parse_bootstrap("admin: {access_log_path: /var/log/admin.log}")
    assert config.admin == Admin(None, "/var/log/admin.log")
    assert parse_bootstrap("node: {}").admin == Admin()


def test_every_problem_is_reported_at_once(doc: dict[str, Any]) -> None:
    doc["static_resources"]["clusters"][0]["lb_policy"] = "CLUSTER_PROVIDED"
    del doc["static_resources"]["clusters"][1]["type"]
    doc["static_resources"]["clusters"][1]["cluster_type"] = {"name": "envoy.clusters.aggregate"}
    doc["static_resources"]["clusters"][2]["lb_policy"] = "LEAST_REQUST"  # a typo protobuf would drop
    hcm(doc)["codec_type"] = "HTTP3"
    hcm(doc)["route_config"]["virtual_hosts"][1]["domains"] = ["reviews"]
    hcm(doc)["route_config"]["virtual_hosts"][0]["routes"][3]["direct_response"]["status"] = 99
    hcm(doc)["route_config"]["virtual_hosts"][0]["routes"][4]["route"]["cluster"] = "foo"
    doc["static_resources"]["listeners"][1]["filter_chains"][0]["transport_socket"] = {"name": "tls"}
    problems = problems_of(doc)
    assert problems == [
        'static_resources.clusters[2].lb_policy: unknown value "LEAST_REQUST"; expected one of ROUND_ROBIN, '
        "LEAST_REQUEST, RING_HASH, RANDOM, MAGLEV, CLUSTER_PROVIDED, LOAD_BALANCING_POLICY_CONFIG",
        "static_resources.clusters[0].lb_policy: CLUSTER_PROVIDED is not supported; use ROUND_ROBIN, "
        "LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV",
        "static_resources.clusters[1].cluster_type: custom cluster types are not supported; "
        "use type STATIC, STRICT_DNS, LOGICAL_DNS, EDS or ORIGINAL_DST",
        f"{VHOST_PATH}.routes[3].direct_response.status: 99 is not a valid status; Envoy requires 200..599",
        f'{HCM_PATH}.route_config.virtual_hosts[1].domains[0]: "reviews" is already a domain of virtual_hosts[0]; '
        "a domain may appear only once across virtual hosts",
        f"{HCM_PATH}.codec_type: HTTP3 needs a QUIC listener (udp_listener_config.quic_options)",
        'static_resources.listeners[1].filter_chains[0].transport_socket.typed_config: "tls" is not supported '
        "here; use a DownstreamTlsContext or raw_buffer",
        f'{VHOST_PATH}.routes[4].route.cluster: unknown cluster "foo" ({DEFINED})',
    ]


def test_a_known_envoy_filter_meshproxy_does_not_run_is_a_problem_not_a_parse_error(
    doc: dict[str, Any],
) -> None:
    lua = {
        "name": "envoy.filters.http.lua",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"},
    }
    hcm(doc)["http_filters"].insert(0, lua)
    hcm(doc)["route_config"]["virtual_hosts"][1]["routes"][0]["typed_per_filter_config"] = {
        "envoy.filters.http.lua": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
            "disabled": True,
        }
    }
    assert problems_of(doc) == [
        f'{HCM_PATH}.http_filters[0]: http filter "envoy.filters.http.lua" '
        "(type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua) is not supported; meshproxy runs "
        "those of docs/configuration.md#http-filters (mark a filter is_optional to have it skipped)"
    ]


def test_enum_typos_are_reported_with_their_paths(doc: dict[str, Any]) -> None:
    hcm(doc)["codec_type"] = "HTTP11"
    hcm(doc)["route_config"]["virtual_hosts"][0]["routes"][2]["redirect"]["response_code"] = "MOVED"
    doc["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][1][
        "health_status"
    ] = "OK"
    problems = problems_of(doc)
    assert [p.split(": unknown value")[0] for p in problems] == [
        f"{HCM_PATH}.codec_type",
        f"{VHOST_PATH}.routes[2].redirect.response_code",
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[1].health_status",
    ]
    assert problems[0].endswith('unknown value "HTTP11"; expected one of AUTO, HTTP1, HTTP2, HTTP3')


def test_importing_the_model_does_not_load_protobuf() -> None:
    """DESIGN: generated protobuf code is imported only at the decode/encode edges."""
    code = "import sys, meshproxy.config.model; print(any(m.startswith(('google.protobuf', 'envoy')) for m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[3],
    )
    assert result.stdout.strip() == "False"


def test_lazy_entry_points() -> None:
    import meshproxy.config

    assert meshproxy.config.load_bootstrap is load_bootstrap
    with pytest.raises(AttributeError):
        _ = meshproxy.config.nothing_here  # type: ignore[attr-defined]


def test_default_priority_max_connections_bounds_the_idle_pool(doc: dict[str, Any]) -> None:
    cluster = doc["static_resources"]["clusters"][0]
    assert parse_bootstrap(json.dumps(doc)).clusters[0].max_idle_connections == 1024
    cluster["circuit_breakers"] = {
        "thresholds": [{"priority": "HIGH", "max_connections": 5}, {"max_connections": 64}]
    }
    assert parse_bootstrap(json.dumps(doc)).clusters[0].max_idle_connections == 64
