"""Route-configuration documents for the compile_route tests, and the compile call they share.

Imported as ``from route_docs import ...``: pytest puts this directory on ``sys.path`` for the
test modules beside it (the repository's tests have no package ``__init__``).
"""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from meshproxy.config.compile import compile_route_configuration
from meshproxy.config.model import Route, RouteConfiguration

FORWARD = {"cluster": "backend"}


def route(match: dict[str, Any] | None = None, **action: Any) -> dict[str, Any]:
    return {"match": {"prefix": "/"} if match is None else match, **(action or {"route": FORWARD})}


def route_config(*routes: dict[str, Any], **fields: Any) -> dict[str, Any]:
    vhost = {"name": "v", "domains": ["*"], "routes": list(routes) or [route()]}
    return {"name": "rc", "virtual_hosts": [vhost]} | fields


def vhosts(*domain_lists: list[str]) -> dict[str, Any]:
    return {"virtual_hosts": [{"name": f"v{i}", "domains": d} for i, d in enumerate(domain_lists)]}


def compiled(doc: dict[str, Any]) -> tuple[RouteConfiguration | None, list[str]]:
    problems: list[str] = []
    msg = json_format.ParseDict(doc, route_pb2.RouteConfiguration())
    result = compile_route_configuration(msg, "rc", problems)
    assert (result is None) == bool(problems), "a route table is returned exactly when there is no problem"
    return result, problems


def problems_of(doc: dict[str, Any]) -> list[str]:
    return compiled(doc)[1]


def only_route(doc: dict[str, Any]) -> Route:
    result, problems = compiled(doc)
    assert problems == []
    assert result is not None
    return result.virtual_hosts[0].routes[0]


R0 = "rc.virtual_hosts[0].routes[0]"
WILDCARD_RULE = 'a wildcard may only be a prefix ("*.example.com") or a suffix ("example.*")'
