"""The versioned snapshot cache: one `Snapshot` per node group, and who is watching which group.

Owns go-control-plane's write path: `SnapshotCache.set_snapshot` checks the snapshot, stores it
and wakes the watchers of every group it now serves. A group without its own snapshot is served
the ``"default"`` group's. Waking is a plain callback; the watcher (a server stream) only marks
itself pending and coalesces, so several set_snapshot calls in a row cost each stream one push.
Waking is O(watchers of the affected groups), never O(all streams) per stream.

Must not depend on: asyncio, grpc (the server adapts its streams to the `Watch` callback).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controlplane.errors import ControlplaneError
from controlplane.xds.snapshot import Snapshot
from meshproxy.errors import ConfigError

DEFAULT_GROUP = "default"

Wake = Callable[[], None]


class SnapshotError(ControlplaneError, ConfigError):
    """A snapshot failed its consistency check; ``problems`` lists each one."""


def node_cluster(node: Any) -> str:
    """The default grouping: a sidecar's bootstrap ``node.cluster`` (its service name)."""
    return str(node.cluster) or DEFAULT_GROUP


class SnapshotCache:
    """Snapshots by node group; `watch` registers a callback run when a group's snapshot changes."""

    def __init__(self, group_of: Callable[[Any], str] = node_cluster) -> None:
        self.group_of = group_of
        self._snapshots: dict[str, Snapshot] = {}
        self._watchers: dict[str, dict[int, Wake]] = {}
        self._next_id = 0

    def set_snapshot(self, group: str, snapshot: Snapshot) -> None:
        """The one write path: raises SnapshotError (nothing changes) if ``snapshot.check()``
        finds problems, else stores it and wakes the watchers of every group it serves."""
        problems = snapshot.check()
        if problems:
            raise SnapshotError([f"group {group!r}: {p}" for p in problems])
        self._snapshots[group] = snapshot
        self._wake(group)

    def remove(self, group: str) -> None:
        """Drops a group's own snapshot; its watchers fall back to the default group's."""
        if self._snapshots.pop(group, None) is not None:
            self._wake(group)

    def get(self, group: str) -> Snapshot | None:
        return self._snapshots.get(group) or self._snapshots.get(DEFAULT_GROUP)

    def groups(self) -> list[str]:
        return sorted(self._snapshots)

    def watch(self, group: str, wake: Wake) -> Callable[[], None]:
        """Calls ``wake()`` (synchronously, inside set_snapshot) whenever ``get(group)`` may have
        changed; returns the function that cancels the watch."""
        self._next_id += 1
        key = self._next_id
        self._watchers.setdefault(group, {})[key] = wake

        def cancel() -> None:
            watchers = self._watchers.get(group)
            if watchers is not None:
                watchers.pop(key, None)
                if not watchers:
                    del self._watchers[group]

        return cancel

    def watcher_count(self, group: str | None = None) -> int:
        if group is not None:
            return len(self._watchers.get(group, ()))
        return sum(len(w) for w in self._watchers.values())

    def _wake(self, group: str) -> None:
        affected = [group]
        if group == DEFAULT_GROUP:
            affected += [g for g in self._watchers if g not in self._snapshots and g != DEFAULT_GROUP]
        for g in affected:
            for wake in list(self._watchers.get(g, {}).values()):
                wake()
