"""Builds an ``HttpContext``'s filter chain from the HCM's compiled http_filters.

Owns ``FACTORIES``: the runtime factory of each compiled filter config type (the config side
is ``config/compile_filters.py``; the contract is ``hcm/filters.py``). To add a filter, add its
config type and factory here. Must not import asyncio, sockets or either codec package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meshproxy.config.filter_config import CompressorFilter, CorsFilter, Fault, HealthCheckFilter
from meshproxy.config.policy import LocalRateLimit
from meshproxy.hcm.compressor import compressor
from meshproxy.hcm.cors import cors
from meshproxy.hcm.fault import fault
from meshproxy.hcm.filters import FilterChain, Hooks
from meshproxy.hcm.health_check import health_check
from meshproxy.hcm.local_ratelimit import local_rate_limit
from meshproxy.hcm.rbac import http_rbac
from meshproxy.rbac.model import RbacFilter

if TYPE_CHECKING:
    from meshproxy.config.model import HttpFilter
    from meshproxy.hcm.context import HttpContext

Factory = Callable[[Any, str, "HttpContext", float], Hooks | None]

FACTORIES: dict[type, Factory] = {
    LocalRateLimit: local_rate_limit,
    Fault: fault,
    HealthCheckFilter: health_check,
    CorsFilter: cors,
    RbacFilter: http_rbac,
    CompressorFilter: compressor,
}


def build_chain(filters: tuple[HttpFilter, ...], ctx: HttpContext, now: float) -> FilterChain | None:
    """The chain of ``filters`` for ``ctx``; None when no filter has anything to do."""
    hooks = [h for f in filters if (h := FACTORIES[type(f.config)](f.config, f.name, ctx, now)) is not None]
    return FilterChain(hooks) if hooks else None
