"""Retry decisions for a route's ``retry_policy``: which outcomes are retried, and when.

Owns the translation of Envoy's ``retry_on`` conditions into two precomputed sets (response
statuses and failure kinds, plus gRPC status codes) and the exponential back-off with full
jitter. Built once per route (``RetryRules``), so the request path pays one set lookup per
failed attempt and nothing per successful one. Sans-I/O: time and randomness are passed in;
must not import asyncio or the codecs.
"""

from __future__ import annotations

import random
from typing import Literal

from meshproxy.config.policy import RetryPolicy

Failure = Literal["connect-failure", "reset", "per-try-timeout", "refused-stream"]

# gRPC status codes named by retry_on (grpc/doc/statuscodes.md).
_GRPC = {"cancelled": 1, "deadline-exceeded": 4, "resource-exhausted": 8, "internal": 13, "unavailable": 14}

# Which retry_on conditions cover each local failure (Envoy's router docs: 5xx and
# gateway-error include connect failures and resets; a per-try timeout counts as "no response").
_FAILURE_COVERED_BY: dict[str, frozenset[str]] = {
    "connect-failure": frozenset({"connect-failure", "5xx", "gateway-error"}),
    "reset": frozenset({"reset", "5xx", "gateway-error"}),
    "per-try-timeout": frozenset({"reset", "5xx", "gateway-error"}),
    "refused-stream": frozenset({"refused-stream", "5xx"}),
}


class RetryRules:
    """A retry policy compiled for the request path."""

    __slots__ = ("failures", "grpc_statuses", "policy", "statuses")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        on = policy.retry_on
        statuses: set[int] = set()
        if "5xx" in on:
            statuses.update(range(500, 600))
        if "gateway-error" in on:
            statuses.update((502, 503, 504))
        if "retriable-4xx" in on:
            statuses.add(409)
        if "retriable-status-codes" in on:
            statuses.update(policy.retriable_status_codes)
        if "envoy-ratelimited" in on:
            statuses.add(429)
        self.statuses = frozenset(statuses)
        self.grpc_statuses = frozenset(code for name, code in _GRPC.items() if name in on)
        self.failures = frozenset(kind for kind, covered in _FAILURE_COVERED_BY.items() if covered & on)

    def status_retriable(self, status: int, grpc_status: int | None = None) -> bool:
        if status in self.statuses:
            return True
        return grpc_status is not None and grpc_status in self.grpc_statuses

    def failure_retriable(self, kind: Failure) -> bool:
        return kind in self.failures

    def backoff(self, retries_done: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retries_done + 1``: uniformly drawn from
        ``[0, (2**n - 1) * base]`` with ``n = retries_done + 1``, capped at ``max_interval``
        (Envoy's JitteredExponentialBackOffStrategy)."""
        p = self.policy
        ceiling = min(p.max_interval, ((1 << min(retries_done + 1, 30)) - 1) * p.base_interval)
        return rng.uniform(0.0, ceiling)


def grpc_status_of(value: bytes | None) -> int | None:
    """The ``grpc-status`` header's code, or None when absent or malformed."""
    if value is None or not value.isdigit():
        return None
    return int(value)
