"""Test-wide setup: every async test runs on both uvloop and the stdlib loop (DESIGN decision 3)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import pytest
from twins import import_twin

# grpcio's fork handlers run in a child forked while gRPC threads are busy (the in-process xDS
# client, then a subprocess for meshctl or a proxy): "skipping fork() handlers", and the child
# crashed now and then (SIGSEGV/SIGABRT) before its exec. The tests only fork to exec.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], Any]]:
    factories: dict[str, Callable[[], Any]] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on Linux
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture(params=["c", "py"], scope="module")
def round_robin(request: pytest.FixtureRequest) -> ModuleType:
    """The ``_round_robin_c`` or ``_round_robin_py`` module: one suite runs both twins."""
    return import_twin("meshproxy.upstream.lb._round_robin", request.param)


@pytest.fixture(scope="module")
def round_robin_c() -> ModuleType:
    return import_twin("meshproxy.upstream.lb._round_robin", "c")


def _twins(name: str) -> tuple[Any, Any]:
    """Fixtures ``name`` (both twins of picker ``_name``, parametrised) and ``name_c``."""
    base = f"meshproxy.upstream.lb._{name}"

    @pytest.fixture(params=["c", "py"], scope="module", name=name)
    def both(request: pytest.FixtureRequest) -> ModuleType:
        return import_twin(base, request.param)

    @pytest.fixture(scope="module", name=f"{name}_c")
    def compiled() -> ModuleType:
        return import_twin(base, "c")

    return both, compiled


least_request, least_request_c = _twins("least_request")
random_lb, random_lb_c = _twins("random_lb")
ring_hash, ring_hash_c = _twins("ring_hash")
maglev, maglev_c = _twins("maglev")
