"""The envoy.filters.http.health_check filter's runtime (pass_through_mode false), sans-I/O.

Owns the answer to a health check request (one whose headers match the filter's): 200 with an
empty body while the listener serves; 503 once it drains, or while health checks are failed
through the admin endpoint's ``/healthcheck/fail`` (until ``/healthcheck/ok``), both read from
the context's listener (``ListenerView.draining``, ``health_failed``). The request never
reaches the router. Must not import asyncio, sockets or either codec package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy.hcm.filters import Hooks
from meshproxy.hcm.reply import LocalReply
from meshproxy.router.match import compile_headers_match

if TYPE_CHECKING:
    from meshproxy.config.filter_config import HealthCheckFilter
    from meshproxy.hcm.context import HttpContext
    from meshproxy.hcm.exchange import Exchange
    from meshproxy.hcm.filters import FilterStream

HEALTHY = LocalReply(200, b"", "-")
# Envoy marks a failed health check answer so an upstream Envoy ejects this host at once.
FAILED = LocalReply(503, b"", "-", ((b"x-envoy-immediate-health-check-fail", b"true"),))


def health_check(config: HealthCheckFilter, name: str, ctx: HttpContext, now: float) -> Hooks:
    """The factory (``hcm/chain.py``)."""
    matches = compile_headers_match(config.headers)
    listener = ctx.listener

    def request(stream: FilterStream, x: Exchange, now: float) -> LocalReply | None:
        if not matches(stream.headers, stream.authority or b"", stream.url):
            return None
        return FAILED if listener.draining or listener.health_failed else HEALTHY

    return Hooks(name, request=request)
