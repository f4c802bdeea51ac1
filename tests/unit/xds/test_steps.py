"""The ADS state machine works in steps the shell can yield between: a RouteConfiguration
compiles a route per step and a ClusterLoadAssignment an endpoint per step inside
``Staged.work``, and ``candidate_steps`` assembles a cluster per step; run to the end, the
steps give what the one-call forms give."""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format
from stepping import run_steps
from test_state import drive, eds_cluster, endpoints, listener, new_state, sotw

from meshproxy.config.model import RouteConfiguration
from meshproxy.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE


def many_routes(name: str, count: int) -> route_pb2.RouteConfiguration:
    routes = [{"match": {"prefix": f"/{i}/"}, "route": {"cluster": f"c{i}"}} for i in range(count)]
    doc = {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]}
    return json_format.ParseDict(doc, route_pb2.RouteConfiguration())


def test_a_route_configuration_compiles_one_route_per_step() -> None:
    state = new_state()
    drive(state, sotw(LISTENER, "1", "l1", listener("web", 8080, rds="big")))
    staged = state.stage(sotw(ROUTE, "1", "r1", many_routes("big", 120)))
    assert staged is not None
    count, _ = run_steps(staged.work())
    assert count > 120
    assert staged.problems == []
    compiled = staged.compiled["big"]
    assert isinstance(compiled, RouteConfiguration)
    assert len(compiled.virtual_hosts[0].routes) == 120


def test_a_bad_route_among_many_is_still_a_nack_naming_it() -> None:
    state = new_state()
    drive(state, sotw(LISTENER, "1", "l1", listener("web", 8080, rds="big")))
    bad = many_routes("big", 50)
    bad.virtual_hosts[0].routes[42].ClearField("route")
    drive(state, sotw(ROUTE, "1", "r1", bad))
    ts = state.types[ROUTE]
    assert ts.nacks == 1 and ts.resources == {}
    assert 'RouteConfiguration "big" (resources[0]): virtual_hosts[0].routes[42]: ' in ts.last_nack


def test_a_load_assignment_compiles_one_endpoint_per_step() -> None:
    state = new_state()
    drive(state, sotw(CLUSTER, "1", "c1", eds_cluster("big")))
    staged = state.stage(sotw(ENDPOINT, "1", "e1", endpoints("big", *range(9000, 9200))))
    assert staged is not None
    count, _ = run_steps(staged.work())
    assert count > 200
    assert staged.problems == []
    assembly = state.candidate(staged)
    assert len(assembly.clusters["big"].localities[0].endpoints) == 200


def test_candidate_steps_bind_a_cluster_per_step_and_equal_candidate() -> None:
    state = new_state()
    names = [f"c{i}" for i in range(30)]
    drive(state, sotw(CLUSTER, "1", "c1", *(eds_cluster(n) for n in names)))
    staged = state.stage(sotw(ENDPOINT, "1", "e1", *(endpoints(n, 9000 + i) for i, n in enumerate(names))))
    assert staged is not None
    run_steps(staged.work())
    count, stepped = run_steps(state.candidate_steps(staged))
    assert count >= len(names)
    whole = state.candidate(staged)
    assert stepped.config == whole.config
    assert stepped.warming == whole.warming == ()
    assert [c.localities[0].endpoints[0].address.port for c in stepped.clusters.values()] == list(
        range(9000, 9030)
    )
