"""Compiles the HCM's http_filters and every level's typed_per_filter_config through one registry.

Owns ``FILTERS``: each HTTP filter meshproxy runs, by Envoy's well-known name and its
typed_config type URL, with the compiler of its typed_config and, when the filter has one, of
its per-route config. ``http_filters`` applies Envoy's rules for the list (the router is last
and only last; a filter meshproxy does not run is refused unless ``is_optional`` or
``disabled``, as Envoy skips an optional filter it lacks). ``filter_configs`` compiles a
route's, virtual host's or route configuration's typed_per_filter_config: an entry whose type
belongs to a filter meshproxy runs is compiled by that filter, or refused with its path when
the filter takes no per-route config; other entries configure filters meshproxy does not run
(refused or skipped in http_filters) and change nothing. To add a filter, add its ``Kind``
(and its runtime factory in ``hcm/chain.py``). Must not depend on the listener or route
compilers (they call it), on asyncio or on sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.compressor.v3 import compressor_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.health_check.v3 import health_check_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message

from meshproxy.config.compile_common import Ctx, type_url, unpack
from meshproxy.config.compile_compressor import COMPRESSOR_NAME, compressor, compressor_per_route
from meshproxy.config.compile_cors import CORS_NAME, cors_filter, cors_policy
from meshproxy.config.compile_fault import FAULT_NAME, fault
from meshproxy.config.compile_health_check import HEALTH_CHECK_NAME, health_check
from meshproxy.config.compile_istio import is_istio_stats
from meshproxy.config.compile_ratelimit import local_rate_limit
from meshproxy.config.compile_rbac import HTTP_RBAC_NAME, http_filter, http_per_route
from meshproxy.config.model import FilterConfigs, HttpFilter

Compiler = Callable[[Any, Ctx], Any]

ROUTER_NAME = "envoy.filters.http.router"
_ROUTER = type_url(router_pb2.Router)
_FILTER_CONFIG = type_url(rc.FilterConfig)


@dataclass(frozen=True, slots=True)
class Kind:
    """An HTTP filter meshproxy runs: ``compile`` turns its typed_config (a ``message``) into
    the frozen config its runtime factory takes (None when there were problems); ``per_route``
    does the same for typed_per_filter_config (a ``per_route_message``), when it has one."""

    name: str
    message: type[Message]
    compile: Compiler
    per_route_message: type[Message] | None = None
    per_route: Compiler | None = None


FILTERS: tuple[Kind, ...] = (
    Kind("envoy.filters.http.local_ratelimit", local_rate_limit_pb2.LocalRateLimit, local_rate_limit),
    Kind(FAULT_NAME, fault_pb2.HTTPFault, fault, fault_pb2.HTTPFault, fault),
    Kind(HEALTH_CHECK_NAME, health_check_pb2.HealthCheck, health_check),
    Kind(CORS_NAME, cors_pb2.Cors, cors_filter, cors_pb2.CorsPolicy, cors_policy),
    Kind(HTTP_RBAC_NAME, http_rbac_pb2.RBAC, http_filter, http_rbac_pb2.RBACPerRoute, http_per_route),
    Kind(
        COMPRESSOR_NAME,
        compressor_pb2.Compressor,
        compressor,
        compressor_pb2.CompressorPerRoute,
        compressor_per_route,
    ),
)
_BY_URL: Mapping[str, Kind] = {type_url(k.message): k for k in FILTERS}
_BY_NAME: Mapping[str, Kind] = {k.name: k for k in FILTERS}
_PER_ROUTE_BY_URL: Mapping[str, Kind] = {type_url(k.per_route_message or k.message): k for k in FILTERS}


def http_filters(msg: hcm.HttpConnectionManager, ctx: Ctx) -> tuple[HttpFilter, ...]:
    """The filters to run, in order, the router left out (it is the HCM's routing)."""
    filters = msg.http_filters
    if not filters:
        ctx.at("http_filters").problem(f"needs the router filter ({ROUTER_NAME}) as its last entry")
        return ()
    compiled: list[HttpFilter] = []
    names: set[str] = set()
    last = len(filters) - 1
    for index, (entry, c) in enumerate(ctx.each("http_filters", filters)):
        url = entry.typed_config.type_url
        is_router = url == _ROUTER if url else entry.name == ROUTER_NAME
        kind = _BY_URL.get(url) if url else _BY_NAME.get(entry.name)
        if is_router and index != last:
            c.problem("the router must be the last http filter")
        elif not is_router and index == last:
            c.problem(f'"{entry.name}" is last, but the last http filter must be the router ({ROUTER_NAME})')
        elif is_router or entry.disabled or is_istio_stats(entry.name, entry.typed_config):
            # istio.stats reports each request at its end: the listener compiler keeps it apart.
            # A disabled filter runs only where a route enables it (FilterConfig), which is
            # refused there (filter_configs): here it never runs.
            continue
        elif kind is None:
            if not entry.is_optional:
                c.problem(
                    f'http filter "{entry.name}" ({url or "no typed_config"}) is not supported; meshproxy '
                    "runs those of docs/configuration.md#http-filters (mark a filter is_optional to have it "
                    "skipped)"
                )
        elif not url:
            c.at("typed_config").problem(f"is required: a {kind.message.DESCRIPTOR.full_name}")
        elif entry.name in names:
            c.at("name").problem(f'"{entry.name}" names an earlier filter too; filter names must be unique')
        else:
            names.add(entry.name)
            config = kind.compile(unpack(entry.typed_config, kind.message), c.at("typed_config"))
            if config is not None:
                compiled.append(HttpFilter(entry.name, config))
    return tuple(compiled)


def filter_configs(entries: Mapping[str, AnyProto], ctx: Ctx) -> FilterConfigs:
    """typed_per_filter_config of one route, virtual host or route configuration."""
    compiled = []
    for name in sorted(entries):
        packed, c = entries[name], ctx.at("typed_per_filter_config", name)
        if packed.type_url == _FILTER_CONFIG:
            c.problem("FilterConfig (is_optional, disabled) is not supported; give the filter's own config")
            continue
        kind = _PER_ROUTE_BY_URL.get(packed.type_url)
        if kind is None:
            continue  # a filter meshproxy does not run: refused or skipped in http_filters
        if kind.per_route is None or kind.per_route_message is None:
            c.problem(f"{kind.name} has no per-route configuration; configure it in http_filters")
            continue
        config = kind.per_route(unpack(packed, kind.per_route_message), c)
        if config is not None:
            compiled.append((name, config))
    return tuple(compiled)
