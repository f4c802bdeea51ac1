"""compile_load_assignment_steps: one step per endpoint, the same localities, factor and
problems as compile_load_assignment (so a cluster of thousands of endpoints can compile
between event-loop turns)."""

from __future__ import annotations

from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import json_format
from stepping import run_steps

from meshproxy.config.compile_cluster import compile_load_assignment, compile_load_assignment_steps


def endpoint(address: str, port: int = 8080) -> dict[str, Any]:
    return {"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}


def both(doc: dict[str, Any]) -> tuple[int, Any, Any]:
    """(steps, the stepped (localities, factor, problems), the one-call ones)."""
    msg = json_format.ParseDict(doc, endpoint_pb2.ClusterLoadAssignment())
    stepped_problems: list[str] = []
    count, (localities, factor) = run_steps(compile_load_assignment_steps(msg, "cla", stepped_problems))
    problems: list[str] = []
    whole = compile_load_assignment(msg, "cla", problems)
    return count, (localities, factor, stepped_problems), (*whole, problems)


def test_one_step_per_endpoint_across_localities_and_the_same_result() -> None:
    doc = {
        "cluster_name": "c",
        "endpoints": [
            {"locality": {"zone": "a"}, "lb_endpoints": [endpoint(f"10.0.0.{i}") for i in range(1, 31)]},
            {"locality": {"zone": "b"}, "priority": 1, "lb_endpoints": [endpoint("10.0.1.1")]},
        ],
        "policy": {"overprovisioning_factor": 150},
    }
    count, stepped, whole = both(doc)
    assert count == 31
    assert stepped == whole
    localities, factor, problems = stepped
    assert (problems, factor) == ([], 150)
    assert [len(loc.endpoints) for loc in localities] == [30, 1]
    assert localities[1].priority == 1 and localities[1].locality.zone == "b"


def test_problems_name_the_endpoint_as_the_one_call_form_does() -> None:
    doc = {"endpoints": [{"lb_endpoints": [endpoint("10.0.0.1"), endpoint("reviews"), endpoint("10.0.0.3")]}]}
    count, stepped, whole = both(doc)
    assert count == 3
    assert stepped == whole
    [problem] = stepped[2]
    assert problem.startswith("cla.endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address: ")
