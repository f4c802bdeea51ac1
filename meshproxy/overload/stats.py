"""The overload manager's statistics and their Prometheus exposition.

Owns Envoy's ``overload.<action>.{active,scale_percent}`` and ``overload.<resource>.{pressure,
failed_updates}`` (plus meshproxy's ``activations``: how often an action became saturated),
as one table of slotted objects, and the collector and flat names ``/stats`` serves. Updated
once per refresh by ``manager.py``; nothing here is touched per request. The per-connection
and per-request counters of the actions (``downstream_rq_overload_close`` and friends) belong
to the listener and HTTP stats, as in Envoy.
Must not import asyncio or the data plane.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class ActionStats:
    __slots__ = ("active", "scale_percent", "activations")

    def __init__(self) -> None:
        self.active = 0  # gauge: 1 while saturated
        self.scale_percent = 0  # gauge: the action's value in percent (floor)
        self.activations = 0  # counter: transitions into saturation


class ResourceStats:
    __slots__ = ("pressure", "failed_updates")

    def __init__(self) -> None:
        self.pressure = 0  # gauge: the last pressure read, in percent
        self.failed_updates = 0  # counter: readings that failed (the last pressure stays)


# The one table: attribute -> (is a counter, help). Everything else derives from it.
_FIELDS: dict[type, dict[str, tuple[bool, str]]] = {
    ActionStats: {
        "active": (False, "1 while the overload action is saturated"),
        "scale_percent": (False, "the overload action's value in percent"),
        "activations": (True, "times the overload action became saturated"),
    },
    ResourceStats: {
        "pressure": (False, "the resource's pressure in percent"),
        "failed_updates": (True, "failed readings of the resource monitor"),
    },
}


class OverloadStats:
    """Stat objects by action and resource name; created when the manager is built, so every
    configured name is exported from the start, at zero."""

    def __init__(self) -> None:
        self.actions: dict[str, ActionStats] = {}
        self.resources: dict[str, ResourceStats] = {}

    def action(self, name: str) -> ActionStats:
        return self.actions.setdefault(name, ActionStats())

    def resource(self, name: str) -> ResourceStats:
        return self.resources.setdefault(name, ResourceStats())

    def scopes(self) -> Iterator[tuple[str, type, dict[str, ActionStats] | dict[str, ResourceStats]]]:
        """(label, stat class, entries by name) per scope."""
        yield "action", ActionStats, self.actions
        yield "resource", ResourceStats, self.resources

    def add(self, other: OverloadStats) -> None:
        """Fold in another worker's stats (``--concurrency``): counters summed, gauges the
        highest (each worker watches the same resources and acts on its own)."""
        for (_, kind, mine), (_, _, theirs) in zip(self.scopes(), other.scopes(), strict=True):
            for name, obj in theirs.items():
                have = mine.setdefault(name, kind())
                for attr, (counter, _) in _FIELDS[kind].items():
                    a, b = getattr(have, attr), getattr(obj, attr)
                    setattr(have, attr, a + b if counter else max(a, b))

    def named(self) -> Iterator[tuple[str, bool, int]]:
        """(Envoy's name ``overload.<name>.<stat>``, is a counter, value) per stat, for ``/stats``."""
        for _, kind, entries in self.scopes():
            for name, obj in entries.items():
                for attr, (counter, _) in _FIELDS[kind].items():
                    yield f"overload.{name}.{attr}", counter, getattr(obj, attr)

    def flat(self) -> dict[str, int]:
        """Envoy's names, for the ``/stats?format=flat`` JSON."""
        return {name: value for name, _, value in self.named()}


def doc_rows() -> Iterator[tuple[str, str, str, str]]:
    """(exported name, type, label, help) per family, for docs/stats.md (``meshproxy.stats``)."""
    for label, kind in (("action", ActionStats), ("resource", ResourceStats)):
        for attr, (counter, text) in _FIELDS[kind].items():
            name = f"meshproxy_overload_{label}_{attr}"
            yield name, ("counter" if counter else "gauge"), label, text


class OverloadCollector:
    """``meshproxy_overload_action_<stat>{action=...}`` and
    ``meshproxy_overload_resource_<stat>{resource=...}`` for ``/stats/prometheus``."""

    def __init__(self, stats: OverloadStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # admin/prometheus.py

        for label, kind, entries in self.stats.scopes():
            for attr, (counter, text) in _FIELDS[kind].items():
                name = f"meshproxy_overload_{label}_{attr}"
                family = (
                    CounterMetricFamily(name, text, labels=[label])
                    if counter
                    else GaugeMetricFamily(name, text, labels=[label])
                )
                for key, obj in entries.items():
                    family.add_metric([key], getattr(obj, attr))
                yield family
