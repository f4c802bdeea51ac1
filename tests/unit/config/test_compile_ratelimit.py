"""compile_listener's http_filters: envoy.filters.http.local_ratelimit (LocalRateLimit) compiled
into HttpConnectionManager.http_filters, and its place among the other filters."""

# ruff: noqa: E501 (the tables hold whole expected messages; splitting them hides what users read)

from __future__ import annotations

from typing import Any

import pytest
from test_compile_listener import ROUTER, compiled, hcm, listener

from meshproxy.config.model import HttpConnectionManager
from meshproxy.config.policy import LocalRateLimit

LRL = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
NAME = "envoy.filters.http.local_ratelimit"
FILTERS = "l.filter_chains[0].filters[0].typed_config.http_filters"
TC = f"{FILTERS}[0].typed_config"
ROUTER_FILTER = {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}
BUCKET = {"max_tokens": 10, "tokens_per_fill": 5, "fill_interval": "1s"}


def rate_limit_filter(**config: Any) -> dict[str, Any]:
    return {"name": NAME, "typed_config": {"@type": LRL, "stat_prefix": "rl"} | config}


def outcome(*filters: dict[str, Any]) -> tuple[LocalRateLimit | None, list[str]]:
    result, problems = compiled(listener(filter_chains=[{"filters": [hcm(http_filters=list(filters))]}]))
    if result is None:
        return None, problems
    manager = result.filter_chains[0].filter
    assert isinstance(manager, HttpConnectionManager)
    limits = [f.config for f in manager.http_filters if isinstance(f.config, LocalRateLimit)]
    return (limits[0] if limits else None), problems


def test_two_rate_limits_by_two_names_each_keep_their_own_bucket() -> None:
    result, problems = compiled(
        listener(
            filter_chains=[
                {
                    "filters": [
                        hcm(
                            http_filters=[
                                rate_limit_filter(token_bucket=BUCKET),
                                rate_limit_filter(token_bucket=BUCKET | {"max_tokens": 3})
                                | {"name": "second"},
                                ROUTER_FILTER,
                            ]
                        )
                    ]
                }
            ]
        )
    )
    assert problems == [] and result is not None
    manager = result.filter_chains[0].filter
    assert isinstance(manager, HttpConnectionManager)
    assert [(f.name, f.config.max_tokens) for f in manager.http_filters] == [(NAME, 10), ("second", 3)]


def test_local_rate_limit_every_field() -> None:
    config = rate_limit_filter(
        token_bucket=BUCKET,
        status={"code": "ServiceUnavailable"},
        filter_enabled={"default_value": {"numerator": 50, "denominator": "HUNDRED"}, "runtime_key": "e"},
        filter_enforced={
            "default_value": {"numerator": 2500, "denominator": "TEN_THOUSAND"},
            "runtime_key": "f",
        },
        response_headers_to_add=[{"header": {"key": "X-RateLimited", "value": "1"}}],
    )
    assert outcome(config, ROUTER_FILTER) == (
        LocalRateLimit("rl", 10, 5, 1.0, 503, 50.0, 25.0, (("x-ratelimited", "1"),)),
        [],
    )


def test_local_rate_limit_defaults_follow_envoy() -> None:
    # No status (or one below 400) means 429; absent fractions mean 0%: the filter does nothing.
    minimal = LocalRateLimit("rl", 3, 1, 0.05, 429, 0.0, 0.0)
    assert outcome(
        rate_limit_filter(token_bucket={"max_tokens": 3, "fill_interval": "0.05s"}), ROUTER_FILTER
    ) == (minimal, [])
    assert outcome(
        rate_limit_filter(token_bucket={"max_tokens": 3, "fill_interval": "0.05s"}, status={"code": "OK"}),
        ROUTER_FILTER,
    ) == (minimal, [])
    capped = rate_limit_filter(
        token_bucket=BUCKET,
        filter_enabled={"default_value": {"numerator": 2000000, "denominator": "MILLION"}},
    )
    limit, _ = outcome(capped, ROUTER_FILTER)
    assert limit is not None
    assert limit.enabled_percent == 100.0


def test_no_rate_limit_filter_and_a_disabled_one() -> None:
    assert outcome(ROUTER_FILTER) == (None, [])
    assert outcome(rate_limit_filter() | {"disabled": True}, ROUTER_FILTER) == (None, [])


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param(
            {"stat_prefix": ""},
            [
                f"{TC}.stat_prefix: is required",
                f"{TC}.token_bucket: is required (per-route typed_per_filter_config is not supported)",
            ],
            id="stat-prefix-and-bucket",
        ),
        pytest.param(
            {"token_bucket": {"max_tokens": 0, "tokens_per_fill": 0}},
            [
                f"{TC}.token_bucket.max_tokens: must be at least 1",
                f"{TC}.token_bucket.tokens_per_fill: must be at least 1",
                f"{TC}.token_bucket.fill_interval: is required",
            ],
            id="bucket-values",
        ),
        pytest.param(
            {"token_bucket": {"max_tokens": 1, "fill_interval": "0.01s"}},
            [f"{TC}.token_bucket.fill_interval: 0.01s is too short; use at least 50ms"],
            id="fill-interval",
        ),
        pytest.param(
            {
                "token_bucket": BUCKET,
                "descriptors": [{"entries": [{"key": "k", "value": "v"}], "token_bucket": BUCKET}],
            },
            [f"{TC}.descriptors: is not supported; meshproxy runs one token bucket per filter chain"],
            id="descriptors",
        ),
        pytest.param(
            {"token_bucket": BUCKET, "local_rate_limit_per_downstream_connection": True},
            [
                f"{TC}.local_rate_limit_per_downstream_connection: is not supported; the bucket is shared by all connections of the filter chain"
            ],
            id="per-connection",
        ),
        pytest.param(
            {
                "token_bucket": BUCKET,
                "response_headers_to_add": [{"header": {"key": "bad header", "value": "1"}}],
            },
            [f'{TC}.response_headers_to_add[0].header.key: "bad header" is not a valid header name'],
            id="header",
        ),
    ],
)
def test_local_rate_limit_rejections(config: dict[str, Any], expected: list[str]) -> None:
    assert outcome(rate_limit_filter(**config), ROUTER_FILTER)[1] == expected


def test_local_rate_limit_placement() -> None:
    good = rate_limit_filter(token_bucket=BUCKET)
    assert outcome(ROUTER_FILTER, good)[1] == [
        f"{FILTERS}[0]: the router must be the last http filter",
        f'{FILTERS}[1]: "{NAME}" is last, but the last http filter must be the router (envoy.filters.http.router)',
    ]
    assert outcome(good, good, ROUTER_FILTER)[1] == [
        f'{FILTERS}[1].name: "{NAME}" names an earlier filter too; filter names must be unique'
    ]
    assert outcome({"name": NAME}, ROUTER_FILTER)[1] == [
        f"{FILTERS}[0].typed_config: is required: a {LRL.rsplit('/', 1)[-1]}"
    ]
