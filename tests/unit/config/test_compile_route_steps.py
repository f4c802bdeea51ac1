"""compile_route_configuration_steps: the same result and problems as the one-call compiler,
one step per route, so the xDS client can yield to its event loop inside a large table."""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format
from route_docs import FORWARD, compiled, route
from stepping import run_steps

from meshproxy.config.compile_route import compile_route_configuration_steps


def stepped(doc: dict[str, Any]) -> tuple[int, Any, list[str]]:
    problems: list[str] = []
    msg = json_format.ParseDict(doc, route_pb2.RouteConfiguration())
    count, result = run_steps(compile_route_configuration_steps(msg, "rc", problems))
    return count, result, problems


def two_hosts(per_host: int) -> dict[str, Any]:
    return {
        "name": "rc",
        "virtual_hosts": [
            {
                "name": f"v{h}",
                "domains": [f"h{h}.example.com"],
                "routes": [route({"prefix": f"/{h}/{i}"}, route=FORWARD) for i in range(per_host)],
            }
            for h in range(2)
        ],
    }


def test_one_step_per_route_across_virtual_hosts_and_the_same_table() -> None:
    doc = two_hosts(per_host=25)
    count, result, problems = stepped(doc)
    assert count == 50
    assert problems == []
    assert result == compiled(doc)[0]
    assert [len(v.routes) for v in result.virtual_hosts] == [25, 25]


def test_problems_are_the_same_and_no_table_is_returned() -> None:
    doc = two_hosts(per_host=3)
    doc["virtual_hosts"][1]["routes"][2] = {"match": {"prefix": "/x"}}  # no action
    doc["virtual_hosts"][0]["domains"] = ["h1.example.com"]  # the other host's domain too
    count, result, problems = stepped(doc)
    assert count == 6
    assert result is None
    assert problems == compiled(doc)[1]
    assert any(p.startswith("rc.virtual_hosts[1].routes[2]: ") for p in problems)
    assert any(p.startswith("rc.virtual_hosts[1].domains[0]: ") for p in problems)


def test_a_table_without_routes_is_one_call() -> None:
    count, result, problems = stepped({"name": "rc", "virtual_hosts": [{"name": "v", "domains": ["*"]}]})
    assert (count, problems) == (0, [])
    assert result is not None and result.virtual_hosts[0].routes == ()
