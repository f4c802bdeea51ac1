"""Compiles envoy.filters.http.health_check (HealthCheck) into ``filter_config.HealthCheckFilter``.

Owns Envoy's rules for the message as meshproxy runs it: pass_through_mode is required (as in
Envoy) and must be false (the proxy answers the health check itself; forwarding it with a
cached answer is refused), and ``headers`` say which requests are health checks (usually a
``:path`` matcher). Must not depend on the listener or route compilers; ``compile_filters``
calls it.
"""

from __future__ import annotations

from envoy.extensions.filters.http.health_check.v3 import health_check_pb2

from meshproxy.config.compile_common import Ctx, header_matcher
from meshproxy.config.filter_config import HealthCheckFilter

HEALTH_CHECK_NAME = "envoy.filters.http.health_check"


def health_check(msg: health_check_pb2.HealthCheck, ctx: Ctx) -> HealthCheckFilter | None:
    mark = ctx.mark()
    if not msg.HasField("pass_through_mode"):
        ctx.at("pass_through_mode").problem("is required (false: the proxy answers health checks)")
    elif msg.pass_through_mode.value:
        ctx.at("pass_through_mode").problem(
            "true is not supported; meshproxy answers health checks itself (pass_through_mode: false)"
        )
    headers = [header_matcher(h, c) for h, c in ctx.each("headers", msg.headers)]
    if not ctx.clean_since(mark):
        return None
    return HealthCheckFilter(tuple(h for h in headers if h is not None))
