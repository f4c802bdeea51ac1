"""The envoy.filters.http.local_ratelimit filter's runtime: one token bucket per filter chain.

Owns the per-request decision around ``router/ratelimit.py``'s bucket: the filter_enabled and
filter_enforced percentages (drawn from the context's ``rng``), the 429 (or configured)
``RL`` local reply with its response_headers_to_add, and the two counters. A request hook only
(``hcm/filters.py``); left out of the chain when filter_enabled is 0%. Must not import asyncio,
sockets or either codec package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy.hcm.filters import Hooks
from meshproxy.hcm.reply import LocalReply
from meshproxy.router.ratelimit import TokenBucket

if TYPE_CHECKING:
    from meshproxy.config.policy import LocalRateLimit
    from meshproxy.hcm.context import HttpContext
    from meshproxy.hcm.exchange import Exchange
    from meshproxy.hcm.filters import FilterStream


class RateLimitFilter:
    __slots__ = ("bucket", "config", "ctx", "reply")

    def __init__(self, config: LocalRateLimit, ctx: HttpContext, now: float) -> None:
        self.config = config
        self.ctx = ctx
        self.bucket = TokenBucket(config, now)
        extra = tuple((n.encode(), v.encode()) for n, v in config.response_headers)
        self.reply = LocalReply(config.status, b"local_rate_limited", "RL", extra)

    def request(self, stream: FilterStream, x: Exchange, now: float) -> LocalReply | None:
        """A reply when this request is refused."""
        ctx, cfg = self.ctx, self.config
        if cfg.enabled_percent < 100 and ctx.rng.random() * 100 >= cfg.enabled_percent:
            return None
        if self.bucket.allow(now):
            ctx.stats.local_rate_limit_ok += 1
            return None
        ctx.stats.local_rate_limit_rate_limited += 1
        if cfg.enforced_percent < 100 and ctx.rng.random() * 100 >= cfg.enforced_percent:
            return None
        return self.reply


def local_rate_limit(config: LocalRateLimit, name: str, ctx: HttpContext, now: float) -> Hooks | None:
    """The factory (``hcm/chain.py``): one bucket per filter chain and configuration, as Envoy's."""
    if config.enabled_percent <= 0:
        return None
    return Hooks(name, request=RateLimitFilter(config, ctx, now).request)
