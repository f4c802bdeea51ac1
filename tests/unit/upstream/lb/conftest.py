"""Fixtures for the load-balancer suites: each fast path runs against its C and Python twin."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def import_twin(base: str, kind: str) -> ModuleType:
    """Import ``base + "_c"`` or ``base + "_py"`` directly, bypassing the dispatcher.

    A missing compiled module skips, unless MESHPROXY_REQUIRE_EXTENSIONS is set (CI), where it
    fails so that an extension that silently did not build cannot pass as green.
    """
    name = f"{base}_{kind}"
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if kind != "c":
            raise
        message = f"{name} was not built ({exc})"
        if os.environ.get("MESHPROXY_REQUIRE_EXTENSIONS"):
            pytest.fail(message + " and MESHPROXY_REQUIRE_EXTENSIONS is set", pytrace=False)
        pytest.skip(message)


@pytest.fixture(params=["c", "py"], scope="module")
def round_robin(request: pytest.FixtureRequest) -> ModuleType:
    """The ``_round_robin_c`` or ``_round_robin_py`` module."""
    return import_twin("meshproxy.upstream.lb._round_robin", request.param)
