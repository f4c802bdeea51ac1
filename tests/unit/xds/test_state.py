"""The sans-I/O ADS state machine: requests, ACK/NACK, warming, removal, delta, timers.

Responses are fed as protobuf messages and the requests it wants sent are read back; no
sockets, no event loop. ``drive`` plays the shell's part (stage, compile, check, accept or
reject) the way ``meshproxy.xds.client`` does.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2 as dpb
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

import meshproxy.config.bootstrap  # noqa: F401  (registers the typed_config messages)
from meshproxy.config.model import (
    Cluster,
    Config,
    DynamicResources,
    HttpConnectionManager,
    Node,
    SocketAddress,
)
from meshproxy.xds.client import backoff_delay
from meshproxy.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from meshproxy.xds.state import XdsState

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def _any(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def eds_cluster(name: str, service: str = "", **extra: Any) -> cluster_pb2.Cluster:
    eds: dict[str, Any] = {"eds_config": {"ads": {}}}
    if service:
        eds["service_name"] = service
    doc = {"name": name, "type": "EDS", "connect_timeout": "1s", "eds_cluster_config": eds, **extra}
    return json_format.ParseDict(doc, cluster_pb2.Cluster())


def endpoints(name: str, *ports: int) -> endpoint_pb2.ClusterLoadAssignment:
    eps = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in ports
    ]
    return json_format.ParseDict(
        {"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]}, endpoint_pb2.ClusterLoadAssignment()
    )


def listener(name: str, port: int, rds: str = "r", **hcm: Any) -> listener_pb2.Listener:
    typed = {
        "@type": HCM,
        "stat_prefix": name,
        "rds": {"config_source": {"ads": {}}, "route_config_name": rds},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
        **hcm,
    }
    doc = {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": typed}]}],
    }
    return json_format.ParseDict(doc, listener_pb2.Listener())


def routes(name: str, cluster: str) -> route_pb2.RouteConfiguration:
    vhost = {
        "name": "all",
        "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
    }
    return json_format.ParseDict({"name": name, "virtual_hosts": [vhost]}, route_pb2.RouteConfiguration())


def new_state(delta: bool = False, timeout: float = 15.0, *, keep_initial: bool = False) -> XdsState:
    """A state on a fresh stream; its initial requests are discarded unless ``keep_initial``."""
    static = Config(node=Node("n1", "web"))
    state = XdsState(static, DynamicResources("xds", delta=delta, initial_fetch_timeout=timeout))
    state.connected(now=0.0)
    if not keep_initial:
        state.requests_to_send()
    return state


def sotw(type_url: str, version: str, nonce: str, *resources: Message) -> dpb.DiscoveryResponse:
    return dpb.DiscoveryResponse(
        version_info=version, type_url=type_url, nonce=nonce, resources=[_any(r) for r in resources]
    )


def delta(
    type_url: str, nonce: str, resources: dict[str, tuple[str, Message]], removed: tuple[str, ...] = ()
) -> Any:
    return dpb.DeltaDiscoveryResponse(
        type_url=type_url,
        nonce=nonce,
        resources=[dpb.Resource(name=n, version=v, resource=_any(m)) for n, (v, m) in resources.items()],
        removed_resources=list(removed),
    )


def drive(state: XdsState, response: Any, now: float = 0.0) -> list[Any]:
    """What the shell does with one response; returns the requests to send."""
    staged = state.stage(response)
    assert staged is not None
    for _ in staged.work():
        pass
    if not staged.problems:
        state.check(staged)
    if staged.problems:
        state.reject(staged, staged.problems)
    else:
        state.accept(staged, state.candidate(staged), now)
    return state.requests_to_send()


# --------------------------------------------------------------------------- state of the world


def test_initial_requests_are_cds_then_lds_wildcards_with_the_node_once() -> None:
    state = new_state(keep_initial=True)
    cds, lds = state.requests_to_send()
    assert (cds.type_url, list(cds.resource_names), cds.version_info, cds.response_nonce) == (
        CLUSTER,
        [],
        "",
        "",
    )
    assert cds.node.id == "n1" and cds.node.cluster == "web" and cds.node.user_agent_name == "meshproxy"
    assert lds.type_url == LISTENER and not lds.HasField("node")


def test_ack_then_eds_subscription_then_warming_until_endpoints() -> None:
    state = new_state()
    ack, eds = drive(state, sotw(CLUSTER, "1", "a", eds_cluster("c1", service="svc")))
    assert (ack.type_url, ack.version_info, ack.response_nonce, ack.HasField("error_detail")) == (
        CLUSTER,
        "1",
        "a",
        False,
    )
    assert (eds.type_url, list(eds.resource_names), eds.response_nonce) == (ENDPOINT, ["svc"], "")
    assert state.warming == ("cluster c1",) and not state.complete
    drive(state, sotw(LISTENER, "1", "b"))
    assert not state.complete  # the cluster still warms
    (ack,) = drive(state, sotw(ENDPOINT, "7", "c", endpoints("svc", 8080, 8081)))
    assert (ack.type_url, ack.version_info, list(ack.resource_names)) == (ENDPOINT, "7", ["svc"])
    assert state.complete and state.warming == ()
    assert state.version == "cds:1 eds:7 lds:1"
    (bound,) = state.active[1].values()
    assert [ep.address for loc in bound.localities for ep in loc.endpoints] == [
        SocketAddress("127.0.0.1", 8080),
        SocketAddress("127.0.0.1", 8081),
    ]


def test_a_listener_warms_until_its_routes_arrive_and_then_serves_them() -> None:
    state = new_state()
    drive(state, sotw(CLUSTER, "1", "a"))
    _ack, rds = drive(state, sotw(LISTENER, "1", "b", listener("l", 10001, rds="main")))
    assert list(rds.resource_names) == ["main"] and rds.type_url == ROUTE
    assert state.active[0] == {} and state.warming == ("listener l",)
    drive(state, sotw(ROUTE, "1", "c", routes("main", "c1")))
    chain = state.active[0]["l"].filter_chains[0]
    assert isinstance(chain.filter, HttpConnectionManager)
    assert chain.filter.route_config.virtual_hosts[0].routes[0].action.cluster == "c1"  # type: ignore[union-attr]
    assert state.complete


def test_nack_keeps_the_previous_version_and_lists_each_problem_with_its_path() -> None:
    state = new_state()
    drive(state, sotw(CLUSTER, "1", "a", eds_cluster("c1")))
    before = dict(state.types[CLUSTER].resources)
    bad = [eds_cluster("c1", connect_timeout="0s"), eds_cluster("c2", lb_policy="CLUSTER_PROVIDED")]
    (nack,) = drive(state, sotw(CLUSTER, "2", "b", *bad))
    assert (nack.version_info, nack.response_nonce, nack.error_detail.code) == ("1", "b", 3)
    lines = nack.error_detail.message.splitlines()
    assert lines[0] == "rejected Cluster update (version 2, nonce b): 2 problem(s)"
    assert lines[1] == 'Cluster "c1" (resources[0]): connect_timeout: must be greater than 0'
    assert lines[2].startswith('Cluster "c2" (resources[1]): lb_policy: ')
    assert state.types[CLUSTER].resources == before and state.types[CLUSTER].version_info == "1"


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(
            [eds_cluster("c1"), eds_cluster("c1")],
            'resources[1]: Cluster "c1" appears twice in one response',
            id="duplicate",
        ),
        pytest.param(
            [routes("r", "c")], 'resources[0]: a "type.googleapis.com/envoy.config.route.v3.Route', id="type"
        ),
        pytest.param(
            [cluster_pb2.Cluster(type=cluster_pb2.Cluster.EDS)],
            "resources[0].name: is required",
            id="no-name",
        ),
    ],
)
def test_malformed_responses_are_nacked(resources: list[Message], expected: str) -> None:
    state = new_state()
    (nack,) = drive(state, sotw(CLUSTER, "1", "a", *resources))
    assert expected in nack.error_detail.message
    assert state.types[CLUSTER].resources == {}


def test_listeners_on_one_address_are_nacked() -> None:
    state = new_state()
    (nack,) = drive(state, sotw(LISTENER, "1", "a", listener("a", 10001), listener("b", 10001)))
    assert 'Listener "b": address 127.0.0.1:10001 is also the address of "a"' in nack.error_detail.message


def test_full_state_removal_unsubscribes_endpoints_and_drops_them() -> None:
    state = new_state()
    drive(state, sotw(CLUSTER, "1", "a", eds_cluster("c1"), eds_cluster("c2")))
    drive(state, sotw(ENDPOINT, "1", "b", endpoints("c1", 1), endpoints("c2", 2)))
    _ack, eds = drive(state, sotw(CLUSTER, "2", "c", eds_cluster("c2")))
    assert list(eds.resource_names) == ["c2"] and (eds.version_info, eds.response_nonce) == ("1", "b")
    assert set(state.types[CLUSTER].resources) == {"c2"} and set(state.types[ENDPOINT].resources) == {"c2"}
    assert set(state.active[1]) == {"c2"}


def test_unrequested_endpoints_are_ignored_and_absent_ones_are_kept() -> None:
    state = new_state()
    drive(state, sotw(CLUSTER, "1", "a", eds_cluster("c1")))
    drive(state, sotw(ENDPOINT, "1", "b", endpoints("c1", 1), endpoints("other", 2)))
    assert set(state.types[ENDPOINT].resources) == {"c1"}
    drive(state, sotw(ENDPOINT, "2", "c"))  # EDS is not full state: c1 stays
    assert set(state.types[ENDPOINT].resources) == {"c1"}


def test_a_changed_cluster_keeps_serving_its_old_version_while_the_new_one_warms() -> None:
    state = new_state()
    drive(state, sotw(CLUSTER, "1", "a", eds_cluster("c1")))
    drive(state, sotw(ENDPOINT, "1", "b", endpoints("c1", 1)))
    old = state.active[1]["c1"]
    drive(state, sotw(CLUSTER, "2", "c", eds_cluster("c1", service="moved")))
    assert state.active[1]["c1"] is old and state.warming == ("cluster c1",)
    drive(state, sotw(ENDPOINT, "2", "d", endpoints("moved", 9)))
    assert state.active[1]["c1"].localities[0].endpoints[0].address.port == 9


def test_reconnect_sends_versions_held_and_named_subscriptions_with_fresh_nonces() -> None:
    state = new_state()
    drive(state, sotw(CLUSTER, "3", "a", eds_cluster("c1")))
    drive(state, sotw(ENDPOINT, "4", "b", endpoints("c1", 1)))
    state.connected(now=1.0)
    cds, eds, lds = state.requests_to_send()
    assert (cds.type_url, cds.version_info, cds.response_nonce, cds.node.id) == (CLUSTER, "3", "", "n1")
    assert (eds.type_url, list(eds.resource_names), eds.version_info, eds.response_nonce) == (
        ENDPOINT,
        ["c1"],
        "4",
        "",
    )
    assert lds.type_url == LISTENER


def test_initial_fetch_timeout_stops_a_cluster_waiting() -> None:
    state = new_state(timeout=15.0)
    drive(state, sotw(LISTENER, "1", "l"))
    drive(state, sotw(CLUSTER, "1", "a", eds_cluster("c1")), now=100.0)
    assert state.next_timer() == 115.0
    assert state.handle_timer(114.0) is None and not state.complete
    assembly = state.handle_timer(115.0)
    assert assembly is not None and state.complete
    assert assembly.clusters["c1"].localities == ()


# --------------------------------------------------------------------------- delta


def test_delta_subscribe_ack_remove_and_reconnect() -> None:
    state = new_state(delta=True, keep_initial=True)
    cds, lds = state.requests_to_send()
    assert (cds.type_url, list(cds.resource_names_subscribe), cds.node.id) == (CLUSTER, [], "n1")
    assert (lds.type_url, list(lds.resource_names_subscribe), lds.HasField("node")) == (LISTENER, [], False)
    ack, eds = drive(
        state, delta(CLUSTER, "a", {"c1": ("v1", eds_cluster("c1")), "c2": ("v1", eds_cluster("c2"))})
    )
    assert (ack.response_nonce, ack.HasField("error_detail"), list(ack.resource_names_subscribe)) == (
        "a",
        False,
        [],
    )
    assert list(eds.resource_names_subscribe) == ["c1", "c2"]
    drive(state, delta(ENDPOINT, "b", {"c1": ("e1", endpoints("c1", 1)), "c2": ("e1", endpoints("c2", 2))}))
    # Delta carries only changes: c2 updated, c1 untouched.
    drive(state, delta(CLUSTER, "c", {"c2": ("v2", eds_cluster("c2", connect_timeout="2s"))}))
    assert set(state.types[CLUSTER].resources) == {"c1", "c2"}
    ack, eds = drive(state, delta(CLUSTER, "d", {}, removed=("c1",)))
    assert (list(eds.resource_names_subscribe), list(eds.resource_names_unsubscribe)) == ([], ["c1"])
    assert set(state.active[1]) == {"c2"}
    state.connected(now=5.0)
    cds, eds, _lds = state.requests_to_send()
    assert dict(cds.initial_resource_versions) == {"c2": "v2"} and list(cds.resource_names_subscribe) == []
    assert dict(eds.initial_resource_versions) == {"c2": "e1"} and list(eds.resource_names_subscribe) == [
        "c2"
    ]


def test_delta_nack_carries_the_nonce_and_the_reason() -> None:
    state = new_state(delta=True)
    (nack,) = drive(state, delta(CLUSTER, "a", {"c1": ("v1", eds_cluster("c2"))}))
    assert nack.response_nonce == "a" and nack.error_detail.code == 3
    assert 'resources[0].name: "c1" but the resource inside is named "c2"' in nack.error_detail.message


# --------------------------------------------------------------------------- backoff


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        bound = min(30.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in delays)
        assert max(delays) > bound * 0.8 and min(delays) < bound * 0.2  # spread over the range
    assert backoff_delay(10_000, rng) <= 30.0


def test_a_static_eds_cluster_takes_its_endpoints_over_ads() -> None:
    static_eds = Cluster(name="s", discovery="EDS", localities=(), eds_service_name="svc")
    static = Config(node=Node("n1", "web"), clusters=(static_eds,))
    state = XdsState(static, DynamicResources("xds"))
    state.connected(now=0.0)
    _cds, eds, _lds = state.requests_to_send()
    assert (eds.type_url, list(eds.resource_names)) == (ENDPOINT, ["svc"])
    drive(state, sotw(CLUSTER, "1", "a", eds_cluster("c1")))
    drive(state, sotw(LISTENER, "1", "b"))
    assert not state.complete and "cluster s" in state.warming
    drive(state, sotw(ENDPOINT, "1", "c", endpoints("svc", 7), endpoints("c1", 8)))
    assert state.complete
    config = state.candidate(state.stage(sotw(LISTENER, "1", "d")) or pytest.fail("no LDS")).config
    bound = config.cluster("s")
    assert bound is not None and bound.localities[0].endpoints[0].address.port == 7


def test_ads_without_lds_or_cds_is_complete_from_the_start() -> None:
    state = XdsState(Config(), DynamicResources("xds", lds=False, cds=False))
    state.connected(now=0.0)
    assert state.complete and state.requests_to_send() == []
