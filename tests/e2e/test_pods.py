"""The pods harness itself: addresses, names, users, and a teardown that leaves nothing."""

from __future__ import annotations

import pytest

from controlplane.demo.pods import NETNS_ETC, SIDECAR_UID, Pods


def test_pods_reach_each_other_by_name_over_both_families(pods: Pods) -> None:
    a = pods.add("a", hosts={"hello": "10.213.0.11", "hello6": "fd00:213::b"})
    b = pods.add("b")
    b.serve("app-b", 8080)
    assert a.dial("hello", 8080).startswith(f"app-b local={b.ipv4}:8080 original=none")
    assert a.dial("hello6", 8080).startswith(f"app-b local=[{b.ipv6}]:8080 original=none")
    assert "hello" in a.run("cat", "/etc/hosts").stdout
    assert "hello" not in b.run("cat", "/etc/hosts").stdout


def test_processes_run_as_the_sidecar_user_when_asked(pods: Pods) -> None:
    a = pods.add("a")
    assert a.run("id", "-u").stdout.strip() == "0"
    assert a.run("id", "-u", user=SIDECAR_UID).stdout.strip() == str(SIDECAR_UID)
    assert a.run("id", "-g", user=SIDECAR_UID).stdout.strip() == str(SIDECAR_UID)


def test_teardown_after_a_failure_leaves_nothing() -> None:
    mesh = Pods()
    with pytest.raises(RuntimeError, match="did not start"), mesh:
        a = mesh.add("a", hosts={"hello": "10.213.0.11"})
        a.serve("app-a", 8080)
        a.serve("again", 8080)  # the port is taken: the harness raises, the mesh is closed
    assert mesh.leftovers() == []
    assert not (NETNS_ETC / a.netns).exists()
