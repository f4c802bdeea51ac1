"""The route decision: what ``RouteTable.route`` hands the data plane for one request.

Owns ``RouteDecision`` and its construction, including the header-mutation levels that apply
to each route, compiled once (see ``headers.py`` for the compiled form and the level order).
One decision exists per route (and one per virtual host for "no route matched"), built when
the table is built and shared by every request. Must not import asyncio, sockets or protobuf.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from meshproxy.config.model import (
    HeaderMutations,
    Route,
    RouteAction,
    RouteConfiguration,
    VirtualHost,
    WeightedCluster,
)
from meshproxy.router.headers import MutationLevel, compile_mutations

Levels = tuple[MutationLevel, ...]
NO_CONFIGS: Mapping[str, Any] = MappingProxyType({})


class RouteDecision:
    """What the router decided: the virtual host, the route (None: no route matched, a 404),
    and the header mutations that apply. One instance per route, shared by every request that
    takes it: treat it as read-only.
    """

    __slots__ = ("_clusters", "filter_configs", "request_mutations", "response_mutations", "route", "vhost")

    def __init__(
        self,
        vhost: VirtualHost,
        route: Route | None,
        request_mutations: Levels = (),
        response_mutations: Levels = (),
        clusters: tuple[tuple[WeightedCluster, Levels, Levels], ...] = (),
        filter_configs: Mapping[str, Any] = NO_CONFIGS,
    ) -> None:
        self.vhost = vhost
        self.route = route
        # Route, virtual host, route configuration levels, most specific first.
        self.request_mutations = request_mutations
        self.response_mutations = response_mutations
        self._clusters = clusters
        # typed_per_filter_config by filter name, the most specific level's (Envoy's rule).
        self.filter_configs = filter_configs

    def request_mutations_for(self, cluster: WeightedCluster | None) -> Levels:
        """The request levels to apply when ``pick_cluster`` returned ``cluster``."""
        if cluster is None:
            return self.request_mutations
        return self._levels_for(cluster)[1]

    def response_mutations_for(self, cluster: WeightedCluster | None) -> Levels:
        """The response levels to apply when ``pick_cluster`` returned ``cluster``."""
        if cluster is None:
            return self.response_mutations
        return self._levels_for(cluster)[2]

    def _levels_for(self, cluster: WeightedCluster) -> tuple[WeightedCluster, Levels, Levels]:
        for entry in self._clusters:
            if entry[0] is cluster:
                return entry
        raise ValueError(f"weighted cluster {cluster.name!r} is not one of this route's")

    def __repr__(self) -> str:
        route = None if self.route is None else self.route.name
        return f"RouteDecision(vhost={self.vhost.name!r}, route={route!r})"


def build_decision(config: RouteConfiguration, vhost: VirtualHost, route: Route) -> RouteDecision:
    req = _levels(route.request_headers, vhost.request_headers, config.request_headers)
    resp = _levels(route.response_headers, vhost.response_headers, config.response_headers)
    action = route.action
    clusters: tuple[tuple[WeightedCluster, Levels, Levels], ...] = ()
    if isinstance(action, RouteAction):
        clusters = tuple(
            (wc, _levels(wc.request_headers) + req, _levels(wc.response_headers) + resp)
            for wc in action.weighted_clusters
        )
    configs = dict(config.filter_configs) | dict(vhost.filter_configs) | dict(route.filter_configs)
    return RouteDecision(vhost, route, req, resp, clusters, configs or NO_CONFIGS)


def _levels(*mutations: HeaderMutations) -> Levels:
    compiled = (compile_mutations(m) for m in mutations)
    return tuple(level for level in compiled if level is not None)
