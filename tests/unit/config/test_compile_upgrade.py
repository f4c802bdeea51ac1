"""Compiling ``upgrade_configs`` (HCM and RouteAction): what is kept, and each refusal with its
field path (meshproxy/config/compile_upgrade.py)."""

from __future__ import annotations

from typing import Any

import pytest
from test_compile_listener import ROUTE_CONFIG, compiled, hcm, listener, terminal

from meshproxy.config.model import HttpConnectionManager, RouteAction

HCM_PATH = "l.filter_chains[0].filters[0].typed_config"
ROUTE_PATH = f"{HCM_PATH}.route_config.virtual_hosts[0].routes[0].route"


def with_route_upgrades(configs: list[dict[str, Any]], **hcm_fields: Any) -> dict[str, Any]:
    routes = {
        "virtual_hosts": [
            {
                "name": "all",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c", "upgrade_configs": configs}}],
            }
        ]
    }
    return listener(filter_chains=[{"filters": [hcm(route_config=routes, **hcm_fields)]}])


def compiled_hcm(doc: dict[str, Any]) -> HttpConnectionManager:
    manager = terminal(doc)
    assert isinstance(manager, HttpConnectionManager)
    return manager


def test_hcm_upgrade_types_are_lower_cased_and_enabled_by_default() -> None:
    configs = [{"upgrade_type": "WebSocket"}, {"upgrade_type": "spdy/3.1", "enabled": False}]
    doc = listener(filter_chains=[{"filters": [hcm(upgrade_configs=configs)]}])
    assert compiled_hcm(doc).upgrades == (("websocket", True), ("spdy/3.1", False))


def test_without_upgrade_configs_no_upgrade_is_enabled() -> None:
    doc = listener(filter_chains=[{"filters": [hcm(route_config=ROUTE_CONFIG)]}])
    assert compiled_hcm(doc).upgrades == ()


def test_route_upgrade_configs_override_per_type() -> None:
    doc = with_route_upgrades([{"upgrade_type": "websocket", "enabled": False}, {"upgrade_type": "Foo"}])
    action = compiled_hcm(doc).route_config.virtual_hosts[0].routes[0].action
    assert isinstance(action, RouteAction)
    assert action.upgrades == (("websocket", False), ("foo", True))


@pytest.mark.parametrize(
    ("configs", "expected"),
    [
        ([{"upgrade_type": ""}], f"{HCM_PATH}.upgrade_configs[0].upgrade_type: is required"),
        (
            [{"upgrade_type": "websocket"}, {"upgrade_type": "WEBSOCKET"}],
            f"{HCM_PATH}.upgrade_configs[1].upgrade_type: 'WEBSOCKET' is configured twice",
        ),
        ([{"upgrade_type": "h2c"}], f"{HCM_PATH}.upgrade_configs[0].upgrade_type: h2c is not supported"),
        ([{"upgrade_type": "CONNECT"}], f"{HCM_PATH}.upgrade_configs[0].upgrade_type: CONNECT tunnelling"),
        (
            [{"upgrade_type": "websocket", "filters": [{"name": "envoy.filters.http.router"}]}],
            f"{HCM_PATH}.upgrade_configs[0].filters: is not supported",
        ),
    ],
)
def test_hcm_upgrade_config_refusals(configs: list[dict[str, Any]], expected: str) -> None:
    _, problems = compiled(listener(filter_chains=[{"filters": [hcm(upgrade_configs=configs)]}]))
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_disabled_connect_is_accepted() -> None:
    doc = listener(
        filter_chains=[{"filters": [hcm(upgrade_configs=[{"upgrade_type": "CONNECT", "enabled": False}])]}]
    )
    assert compiled_hcm(doc).upgrades == (("connect", False),)


@pytest.mark.parametrize(
    ("configs", "expected"),
    [
        ([{"upgrade_type": "CONNECT"}], f"{ROUTE_PATH}.upgrade_configs[0].upgrade_type: CONNECT tunnelling"),
        (
            [{"upgrade_type": "CONNECT", "enabled": False, "connect_config": {}}],
            f"{ROUTE_PATH}.upgrade_configs[0].connect_config: is not supported",
        ),
        (
            [{"upgrade_type": "websocket"}, {"upgrade_type": "websocket", "enabled": False}],
            f"{ROUTE_PATH}.upgrade_configs[1].upgrade_type: 'websocket' is configured twice",
        ),
    ],
)
def test_route_upgrade_config_refusals(configs: list[dict[str, Any]], expected: str) -> None:
    _, problems = compiled(with_route_upgrades(configs))
    assert len(problems) == 1 and problems[0].startswith(expected), problems
