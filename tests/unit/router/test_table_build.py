"""RouteTable.build: the table ``RouteTable(config)`` builds, one step per route, so a large
table can be built between event-loop turns (an xDS update)."""

from __future__ import annotations

from stepping import run_steps

from meshproxy.config.model import (
    HeaderMatcher,
    HeaderMutations,
    HeaderValueOption,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    StringMatch,
    VirtualHost,
)
from meshproxy.router.table import RouteTable


def config() -> RouteConfiguration:
    api = tuple(
        Route(RouteMatch("prefix", f"/api/{i}/"), RouteAction(cluster=f"api{i}"), name=f"api{i}")
        for i in range(40)
    )
    canary = Route(
        RouteMatch("prefix", "/", headers=(HeaderMatcher("x-canary", StringMatch("exact", "1")),)),
        RouteAction(cluster="canary"),
        name="canary",
        request_headers=HeaderMutations((HeaderValueOption("x-route", "canary"),)),
    )
    web = (canary, Route(RouteMatch("prefix", "/"), RouteAction(cluster="web"), name="web"))
    return RouteConfiguration(
        "rc",
        (
            VirtualHost("api", ("api.example.com", "api.*"), api),
            VirtualHost("web", ("*.example.com", "*"), web),
        ),
        request_headers=HeaderMutations((HeaderValueOption("x-mesh", "1"),)),
    )


def decided(t: RouteTable, authority: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> object:
    decision = t.route(authority, target, headers)
    assert decision is not None
    route = decision.route
    return (
        decision.vhost.name,
        None if route is None else route.name,
        [(level.remove, level.add) for level in decision.request_mutations],
    )


def test_one_step_per_route_and_the_same_decisions_as_the_constructor() -> None:
    cfg = config()
    count, built = run_steps(RouteTable.build(cfg))
    assert count == 42
    assert built.config is cfg
    direct = RouteTable(cfg)
    requests = [
        (b"api.example.com", b"/api/7/x", []),
        (b"api.example.org:8080", b"/api/39/", []),
        (b"api.example.com", b"/nothing", []),
        (b"www.example.com", b"/", [(b"x-canary", b"1")]),
        (b"elsewhere", b"/page?q=1", []),
    ]
    for authority, target, headers in requests:
        assert decided(built, authority, target, headers) == decided(direct, authority, target, headers)
    assert decided(built, b"api.example.com", b"/api/7/x", [])[1] == "api7"
    assert decided(built, b"www.example.com", b"/", [(b"x-canary", b"1")])[1] == "canary"
    assert decided(built, b"api.example.com", b"/nothing", [])[1] is None


def test_an_empty_configuration_builds_without_steps() -> None:
    count, built = run_steps(RouteTable.build(RouteConfiguration("empty", ())))
    assert count == 0
    assert built.route(b"host", b"/", []) is None
