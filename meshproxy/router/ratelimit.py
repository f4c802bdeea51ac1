"""The local rate limit's token bucket (envoy.filters.http.local_ratelimit), sans-I/O.

Owns the bucket's arithmetic only: it starts full, and each whole ``fill_interval`` that has
passed adds ``tokens_per_fill`` up to ``max_tokens``, as Envoy's fill timer does (a partial
interval adds nothing). Refilling is computed lazily from ``now`` when a request asks, so the
bucket needs no timer and each decision is O(1). Whether the filter is enabled or enforced for a
request (its percentages), the status and headers of the local reply, and the counters belong to
the caller. Must not import asyncio or sockets; ``now`` is passed in (seconds, monotonic).
"""

from __future__ import annotations

from meshproxy.config.policy import LocalRateLimit


class TokenBucket:
    """One bucket shared by every request through a filter chain."""

    __slots__ = ("_fill_interval", "_fills", "_max_tokens", "_origin", "_tokens", "_tokens_per_fill")

    def __init__(self, config: LocalRateLimit, now: float) -> None:
        self._max_tokens = config.max_tokens
        self._tokens_per_fill = config.tokens_per_fill
        self._fill_interval = config.fill_interval
        self._tokens = config.max_tokens
        # Fills happen at _origin + k * fill_interval; _fills is the last k applied. Counting from
        # a fixed origin (rather than adding intervals up) keeps the grid from drifting.
        self._origin = now
        self._fills = 0

    def allow(self, now: float) -> bool:
        """Takes a token if there is one; False means the request is over the limit."""
        fills = int((now - self._origin) / self._fill_interval)
        if fills > self._fills:  # false when the clock stepped back: nothing is added
            if self._tokens < self._max_tokens:
                added = (fills - self._fills) * self._tokens_per_fill
                self._tokens = min(self._max_tokens, self._tokens + added)
            self._fills = fills
        if self._tokens > 0:
            self._tokens -= 1
            return True
        return False
