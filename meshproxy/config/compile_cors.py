"""Compiles envoy.filters.http.cors: the filter (Cors, no fields) and its per-route CorsPolicy.

Owns Envoy's rules for the policy: origins are string matchers (one matching ``*`` allows every
origin), the header lists and max_age are sent as configured, filter_enabled absent means every
request and shadow_enabled absent none (their runtime keys are accepted without effect: no
runtime layer). The route's and virtual host's legacy ``cors`` field stays refused (fidelity.py);
give the policy as typed_per_filter_config. Must not depend on the listener or route
compilers; ``compile_filters`` calls it.
"""

from __future__ import annotations

from envoy.extensions.filters.http.cors.v3 import cors_pb2

from meshproxy.config.compile_common import Ctx, fractional_percent, string_match, wrapped
from meshproxy.config.filter_config import CorsFilter, CorsPolicy, Percent

CORS_NAME = "envoy.filters.http.cors"


def cors_filter(msg: cors_pb2.Cors, ctx: Ctx) -> CorsFilter:
    return CorsFilter()


def cors_policy(msg: cors_pb2.CorsPolicy, ctx: Ctx) -> CorsPolicy | None:
    mark = ctx.mark()
    origins = [
        string_match(m, "match_pattern", c, ignore_case=m.ignore_case)
        for m, c in ctx.each("allow_origin_string_match", msg.allow_origin_string_match)
    ]
    enabled = _percent(msg, "filter_enabled", ctx, Percent(100))
    shadow = _percent(msg, "shadow_enabled", ctx, Percent(0))
    if not ctx.clean_since(mark) or enabled is None or shadow is None:
        return None
    return CorsPolicy(
        allow_origins=tuple(o for o in origins if o is not None),
        allow_methods=msg.allow_methods,
        allow_headers=msg.allow_headers,
        expose_headers=msg.expose_headers,
        max_age=msg.max_age,
        allow_credentials=wrapped(msg, "allow_credentials", False),
        allow_private_network_access=wrapped(msg, "allow_private_network_access", False),
        enabled=enabled,
        shadow=shadow,
    )


def _percent(msg: cors_pb2.CorsPolicy, name: str, ctx: Ctx, default: Percent) -> Percent | None:
    if not msg.HasField(name):
        return default
    return fractional_percent(getattr(msg, name).default_value, ctx.at(name).at("default_value"))
