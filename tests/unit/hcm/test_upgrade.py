"""Envoy's upgrade table (hcm/upgrade.py): HCM setting x route setting, types compared
case-insensitively; a route can enable a type the HCM does not list (Envoy's
``createUpgradeFilterChain``: "the route-config ... override[s]")."""

from __future__ import annotations

import pytest

from meshproxy.hcm.upgrade import upgrade_allowed

WS_ON = (("websocket", True),)
WS_OFF = (("websocket", False),)


@pytest.mark.parametrize(
    ("hcm", "route", "allowed"),
    [
        (WS_ON, (), True),  # HCM T, route default T
        (WS_ON, WS_ON, True),  # T, T
        (WS_ON, WS_OFF, False),  # T, F
        (WS_OFF, WS_ON, True),  # F, T
        (WS_OFF, (), False),  # F, default
        (WS_OFF, WS_OFF, False),  # F, F
        ((), WS_ON, True),  # not listed by the HCM: the route enables it (Envoy's envoy-ws-route)
        ((), WS_OFF, False),
        ((), (), False),
        ((("foo", True),), (), False),  # another type
    ],
)
def test_envoy_upgrade_table(
    hcm: tuple[tuple[str, bool], ...], route: tuple[tuple[str, bool], ...], allowed: bool
) -> None:
    assert upgrade_allowed(b"websocket", hcm, route) is allowed


@pytest.mark.parametrize("kind", [b"WebSocket", b"WEBSOCKET", b" websocket "])
def test_the_request_type_is_compared_case_insensitively(kind: bytes) -> None:
    assert upgrade_allowed(kind, WS_ON, ())
