"""End-to-end tests in pods: the root check (one skip reason) and the ``pods`` fixtures.

Every test here builds network namespaces and installs netfilter rules, which needs root. Run
as another user, the whole directory skips with one reason; run as root without iproute2 or
iptables, it fails and says what to install (a missing tool must not pass as a skip in CI).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from controlplane.demo.pods import Pods

ROOT_REASON = "pod tests need root (network namespaces, iptables); CI runs them as root"
TOOLS = (
    "ip",
    "setpriv",
    "iptables-save",
    "iptables-restore",
    "ip6tables-save",
    "ip6tables-restore",
    "tcpdump",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.skip(reason=ROOT_REASON))


def _mesh() -> Iterator[Pods]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: install iproute2, iptables and tcpdump (make debs)", pytrace=False
        )
    mesh = Pods()
    try:
        yield mesh
    finally:
        mesh.close()
        left = mesh.leftovers()
        assert not left, f"teardown left {left}"


@pytest.fixture
def pods() -> Iterator[Pods]:
    """A fresh set of pods for one test, torn down (and checked to be gone) after it."""
    yield from _mesh()


@pytest.fixture(scope="module")
def module_pods() -> Iterator[Pods]:
    """Pods shared by a module's tests (set up once: processes, rules), checked at teardown."""
    yield from _mesh()
