"""Turns the accepted xDS resources into one runtime ``Config``, warming included.

Owns Envoy's warming rule: a cluster of type EDS is used only once its ClusterLoadAssignment
arrived, a listener only once every RouteConfiguration its http_connection_managers name over
RDS arrived. Until then the version that was serving (if any) keeps serving; a resource that
never was active stays out. Once a name's initial fetch timed out, it is built without what it
waits for (no endpoints, no routes), as Envoy does.
Pure functions of their arguments: no asyncio, no sockets, no protobuf. ``assemble`` is a
generator that yields after each cluster and listener (binding a thousand clusters to their
endpoints takes over ten milliseconds), so the shell can let its event loop run between steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from dataclasses import dataclass, field

from meshproxy.config.model import (
    Cluster,
    Config,
    FilterChain,
    HttpConnectionManager,
    Listener,
    RouteConfiguration,
)
from meshproxy.xds.resources import LoadAssignment, eds_name, rds_names


@dataclass(frozen=True, slots=True)
class Assembly:
    config: Config
    listeners: dict[str, Listener]  # the dynamic listeners now active
    clusters: dict[str, Cluster]  # the dynamic clusters now active
    warming: tuple[str, ...]  # "cluster x" / "listener y" still waiting


@dataclass(slots=True)
class BindCache:
    """Keeps the bound object for unchanged inputs, so an unchanged cluster or listener is the
    very same object after a swap (the apply step then skips it by identity)."""

    clusters: dict[str, tuple[Cluster, LoadAssignment | None, Cluster]] = field(default_factory=dict)
    listeners: dict[str, tuple[Listener, tuple[object, ...], Listener]] = field(default_factory=dict)


def assemble(
    static: Config,
    listeners: dict[str, Listener],
    clusters: dict[str, Cluster],
    routes: dict[str, RouteConfiguration],
    endpoints: dict[str, LoadAssignment],
    active: tuple[dict[str, Listener], dict[str, Cluster]],
    expired: set[str],
    cache: BindCache,
    version: str,
) -> Generator[None, None, Assembly]:
    """The Assembly, as a generator's return value; ``expired`` holds RDS/EDS resource names
    whose initial fetch timed out."""
    warming: list[str] = []
    static_clusters = []
    for cfg in static.clusters:  # a static EDS cluster takes its endpoints over ADS too
        wanted = eds_name(cfg)
        if wanted is not None and wanted not in endpoints and wanted not in expired:
            warming.append(f"cluster {cfg.name}")
        static_clusters.append(_bind_cluster(cfg, endpoints.get(wanted) if wanted else None, cache))
    live_clusters: dict[str, Cluster] = {}
    for name, cfg in clusters.items():
        yield
        wanted = eds_name(cfg)
        la = endpoints.get(wanted) if wanted is not None else None
        if wanted is not None and la is None and wanted not in expired:
            warming.append(f"cluster {name}")
            if name in active[1]:
                live_clusters[name] = active[1][name]
            continue
        live_clusters[name] = _bind_cluster(cfg, la, cache)
    live_listeners: dict[str, Listener] = {}
    for name, listener in listeners.items():
        yield
        needed = rds_names(listener)
        missing = [n for n in needed if n not in routes and n not in expired]
        if missing:
            warming.append(f"listener {name}")
            if name in active[0]:
                live_listeners[name] = active[0][name]
            continue
        live_listeners[name] = _bind_listener(listener, routes, cache) if needed else listener
    for stale in [n for n in cache.clusters if n not in clusters and static.cluster(n) is None]:
        del cache.clusters[stale]
    for stale in [n for n in cache.listeners if n not in listeners]:
        del cache.listeners[stale]
    config = dataclasses.replace(
        static,
        listeners=static.listeners + tuple(live_listeners.values()),
        clusters=tuple(static_clusters) + tuple(live_clusters.values()),
        version=version,
    )
    return Assembly(config, live_listeners, live_clusters, tuple(warming))


def _bind_cluster(cfg: Cluster, la: LoadAssignment | None, cache: BindCache) -> Cluster:
    if cfg.discovery != "EDS":
        return cfg
    hit = cache.clusters.get(cfg.name)
    if hit is not None and hit[0] is cfg and hit[1] is la:
        return hit[2]
    if la is None:  # the initial fetch timed out: a cluster with no endpoints
        bound = cfg
    else:
        lb = cfg.lb
        if lb.overprovisioning_factor != la.overprovisioning_factor:
            lb = dataclasses.replace(lb, overprovisioning_factor=la.overprovisioning_factor)
        bound = dataclasses.replace(cfg, localities=la.localities, lb=lb)
    cache.clusters[cfg.name] = (cfg, la, bound)
    return bound


def _bind_listener(cfg: Listener, routes: dict[str, RouteConfiguration], cache: BindCache) -> Listener:
    inputs = tuple(routes.get(n) for n in sorted(rds_names(cfg)))
    hit = cache.listeners.get(cfg.name)
    if hit is not None and hit[0] is cfg and all(a is b for a, b in zip(hit[1], inputs, strict=True)):
        return hit[2]

    def bind(chain: FilterChain) -> FilterChain:
        f = chain.filter
        if not isinstance(f, HttpConnectionManager) or not f.rds:
            return chain
        rc = routes.get(f.rds) or RouteConfiguration(f.rds, ())
        return dataclasses.replace(chain, filter=dataclasses.replace(f, route_config=rc))

    default = cfg.default_filter_chain
    bound = dataclasses.replace(
        cfg,
        filter_chains=tuple(bind(c) for c in cfg.filter_chains),
        default_filter_chain=bind(default) if default is not None else None,
    )
    cache.listeners[cfg.name] = (cfg, inputs, bound)
    return bound
