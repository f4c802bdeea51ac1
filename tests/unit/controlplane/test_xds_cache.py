"""`controlplane.xds.cache.SnapshotCache`: the one write path, group fallback and watcher wake-ups
(sans-I/O: watchers are plain callbacks)."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from xds_resources import service_resources, service_snapshot

from controlplane.xds import CLUSTER, DEFAULT_GROUP, Snapshot, SnapshotCache, SnapshotError


def snap(version: str, port: int = 1) -> Snapshot:
    return service_snapshot(version, "svc", {"a": 1}, {"a": [port]})


def test_group_of_defaults_to_node_cluster() -> None:
    cache = SnapshotCache()
    assert cache.group_of(base_pb2.Node(id="n", cluster="payments")) == "payments"
    assert cache.group_of(base_pb2.Node(id="n")) == DEFAULT_GROUP
    custom = SnapshotCache(group_of=lambda node: node.id)
    assert custom.group_of(base_pb2.Node(id="n", cluster="x")) == "n"


def test_set_get_groups() -> None:
    cache = SnapshotCache()
    assert cache.get("x") is None
    cache.set_snapshot("x", snap("1"))
    cache.set_snapshot("y", snap("2"))
    assert cache.get("x").version == "1"  # type: ignore[union-attr]
    assert cache.groups() == ["x", "y"]


def test_inconsistent_snapshot_is_refused_and_the_old_one_stays() -> None:
    cache = SnapshotCache()
    cache.set_snapshot("x", snap("1"))
    woken: list[str] = []
    cache.watch("x", lambda: woken.append("x"))
    bad = service_resources("svc", {"a": 1}, {"a": [1]})
    del bad[CLUSTER]["a"]
    with pytest.raises(SnapshotError) as err:
        cache.set_snapshot("x", Snapshot("2", bad))
    assert err.value.problems == [
        "group 'x': route configuration 'svc-route': virtual host 'svc-route' routes[0]: "
        "cluster 'a' has no Cluster"
    ]
    assert cache.get("x").version == "1"  # type: ignore[union-attr]
    assert woken == []


def test_set_snapshot_wakes_only_that_groups_watchers() -> None:
    cache = SnapshotCache()
    woken: list[str] = []
    cache.set_snapshot("y", snap("0"))
    cache.watch("x", lambda: woken.append("x1"))
    cache.watch("x", lambda: woken.append("x2"))
    cache.watch("y", lambda: woken.append("y"))
    cache.set_snapshot("x", snap("1"))
    assert sorted(woken) == ["x1", "x2"]


def test_groups_without_a_snapshot_fall_back_to_default() -> None:
    cache = SnapshotCache()
    woken: list[str] = []
    cache.watch("lonely", lambda: woken.append("lonely"))
    cache.watch("own", lambda: woken.append("own"))
    cache.set_snapshot("own", snap("own"))
    woken.clear()
    cache.set_snapshot(DEFAULT_GROUP, snap("d"))
    assert woken == ["lonely"]  # "own" has its own snapshot: the default does not concern it
    assert cache.get("lonely").version == "d"  # type: ignore[union-attr]
    assert cache.get("own").version == "own"  # type: ignore[union-attr]
    woken.clear()
    cache.remove("own")
    assert woken == ["own"]
    assert cache.get("own").version == "d"  # type: ignore[union-attr]


def test_cancelled_watch_is_not_woken() -> None:
    cache = SnapshotCache()
    woken: list[str] = []
    cancel = cache.watch("x", lambda: woken.append("x"))
    assert cache.watcher_count("x") == 1
    cancel()
    cancel()  # idempotent
    assert cache.watcher_count() == 0
    cache.set_snapshot("x", snap("1"))
    assert woken == []
