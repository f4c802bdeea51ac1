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
    here = os.path.dirname(__file__)
    mine = [item for item in items if str(item.path).startswith(here)]
    for item in mine:
        # Under pytest-xdist (`make test` runs it) the pods tests share one worker, one at a time:
        # they share network-namespace names, the host's iptables and the image store.
        item.add_marker(pytest.mark.xdist_group("e2e"))
    if os.geteuid() != 0:
        for item in mine:
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
