"""The admin's view of N workers as one proxy: stats and ``/clusters`` folded together.

Owns the folding rules. Stats: counters and histograms are summed; gauges are summed (requests
and connections in progress, circuit-breaker headroom: each worker has its own breakers) unless
their table line says ``across_workers="max"`` (a cluster's membership, an open breaker, an
ejection: each worker holds its own copy of one fact). The process scope (``server.*``) is the
supervisor's own. ``/clusters``: per cluster and per host the request and connection counts
are summed, a host is ejected if any worker ejected it, everything else (membership, weights,
priority loads, breaker settings) is the first worker's. Pure functions over snapshots the
workers sent; must not depend on asyncio or the data plane.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshproxy.stats import Histogram, Stat, Store

# /clusters keys summed over the workers (cluster level, then host level); the rest is the first's.
_CLUSTER_SUMS = ("upstream_rq_total", "upstream_rq_active", "upstream_cx_active", "upstream_cx_connect_fail")
_HOST_SUMS = ("rq_total", "rq_active", "cx_active", "cx_idle", "num_ejections")


def merge_stores(stores: Sequence[Store], server: Mapping[str, float]) -> Store:
    """One ``Store`` holding every worker's stats folded together, with ``server`` as its
    process scope. The stores are the workers' snapshots (unpickled copies): folded in place."""
    out = Store()
    out.server.update(server)
    for store in stores:
        for scope, entries in store.labelled():
            into: dict[str, Any] = getattr(out, scope.name)
            for key, obj in entries.items():
                have = into.get(key)
                if have is None:
                    into[key] = obj
                    continue
                for name, stat in scope.stats.items():
                    setattr(have, name, _fold(stat, getattr(have, name), getattr(obj, name)))
    return out


def _fold(stat: Stat, a: Any, b: Any) -> Any:
    if isinstance(a, Histogram):
        a.counts = [x + y for x, y in zip(a.counts, b.counts, strict=True)]
        a.sum += b.sum
        return a
    if isinstance(a, list):
        return [x + y for x, y in zip(a, b, strict=True)]
    if isinstance(a, dict):
        return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}
    if stat.kind == "gauge" and stat.across_workers == "max":
        return max(a, b)
    return a + b


def merge_clusters(answers: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The workers' ``/clusters`` answers as one (clusters matched by name, hosts by address)."""
    if not answers:
        return []
    first, *rest = answers
    by_name = {c["name"]: c for c in first}
    for answer in rest:
        for cluster in answer:
            have = by_name.get(cluster["name"])
            if have is None:  # a worker between two configurations
                continue
            for key in _CLUSTER_SUMS:
                have[key] += cluster[key]
            hosts = {h["address"]: h for h in have["hosts"]}
            for host in cluster["hosts"]:
                mine = hosts.get(host["address"])
                if mine is None:
                    continue
                for key in _HOST_SUMS:
                    if key in mine:
                        mine[key] += host[key]
                if "ejected" in mine:
                    mine["ejected"] = mine["ejected"] or host["ejected"]
    return first
