"""RetryRules: retry_on conditions compiled to status and failure sets; the jittered back-off."""

from __future__ import annotations

import random

import pytest

from meshproxy.config.policy import RetryPolicy
from meshproxy.router.retry import RetryRules, grpc_status_of


def rules(
    *on: str, codes: frozenset[int] = frozenset(), base: float = 0.025, cap: float = 0.25
) -> RetryRules:
    return RetryRules(
        RetryPolicy(frozenset(on), retriable_status_codes=codes, base_interval=base, max_interval=cap)
    )


@pytest.mark.parametrize(
    ("on", "status", "expected"),
    [
        (("5xx",), 500, True),
        (("5xx",), 599, True),
        (("5xx",), 404, False),
        (("gateway-error",), 502, True),
        (("gateway-error",), 500, False),
        (("retriable-4xx",), 409, True),
        (("retriable-4xx",), 404, False),
        (("envoy-ratelimited",), 429, True),
        (("reset",), 503, False),
    ],
)
def test_status_conditions(on: tuple[str, ...], status: int, expected: bool) -> None:
    assert rules(*on).status_retriable(status) is expected


def test_retriable_status_codes_only_with_their_condition() -> None:
    assert rules("retriable-status-codes", codes=frozenset({418})).status_retriable(418)
    assert not rules("5xx", codes=frozenset({418})).status_retriable(418)


@pytest.mark.parametrize(
    ("on", "kind", "expected"),
    [
        (("connect-failure",), "connect-failure", True),
        (("5xx",), "connect-failure", True),
        (("gateway-error",), "reset", True),
        (("reset",), "per-try-timeout", True),
        (("refused-stream",), "refused-stream", True),
        (("5xx",), "refused-stream", True),
        (("connect-failure",), "reset", False),
        (("retriable-4xx",), "connect-failure", False),
        (("unavailable",), "reset", False),
    ],
)
def test_failure_conditions(on: tuple[str, ...], kind: str, expected: bool) -> None:
    assert rules(*on).failure_retriable(kind) is expected  # type: ignore[arg-type]


def test_grpc_conditions_read_the_grpc_status() -> None:
    r = rules("unavailable", "cancelled")
    assert r.status_retriable(200, 14) and r.status_retriable(200, 1)
    assert not r.status_retriable(200, 4) and not r.status_retriable(200, None)


@pytest.mark.parametrize(("value", "code"), [(b"14", 14), (b"0", 0), (None, None), (b"x", None), (b"", None)])
def test_grpc_status_of(value: bytes | None, code: int | None) -> None:
    assert grpc_status_of(value) == code


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    r = rules("5xx", base=0.01, cap=0.05)
    rng = random.Random(7)
    for retries_done, ceiling in [(0, 0.01), (1, 0.03), (2, 0.05), (10, 0.05)]:
        draws = [r.backoff(retries_done, rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.8 * ceiling  # uniformly spread up to the ceiling, not a fixed delay
