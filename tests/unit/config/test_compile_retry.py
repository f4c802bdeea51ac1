"""compile_route_configuration: a route action's upstream policy: retry_policy (the route's, or
its virtual host's), hash_policy, max_stream_duration and per_request_buffer_limit_bytes."""

# ruff: noqa: E501 (the tables hold whole expected messages; splitting them hides what users read)

from __future__ import annotations

from typing import Any

import pytest
from route_docs import FORWARD, R0, compiled, only_route, problems_of, route, route_config

from meshproxy.config.model import RouteAction
from meshproxy.config.policy import RETRY_ON, HashPolicy, RetryPolicy

RP = f"{R0}.route.retry_policy"
PREVIOUS_HOSTS = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"


def action_of(doc: dict[str, Any]) -> RouteAction:
    action = only_route(doc).action
    assert isinstance(action, RouteAction)
    return action


def forward(**fields: Any) -> dict[str, Any]:
    return route_config(route(route=FORWARD | fields))


def with_vhost(vhost_fields: dict[str, Any], *routes: dict[str, Any]) -> dict[str, Any]:
    doc = route_config(*routes)
    doc["virtual_hosts"][0] |= vhost_fields
    return doc


# --------------------------------------------------------------------------- retry_policy


def test_retry_policy_every_field() -> None:
    policy = {
        "retry_on": "5xx, reset,connect-failure,,retriable-status-codes",
        "num_retries": 3,
        "per_try_timeout": "0.5s",
        "per_try_idle_timeout": "0.2s",
        "retriable_status_codes": [409, 503],
        "retry_back_off": {"base_interval": "0.1s", "max_interval": "0.5s"},
        "retry_host_predicate": [
            {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": PREVIOUS_HOSTS}}
        ],
        "host_selection_retry_max_attempts": 5,
    }
    assert action_of(forward(retry_policy=policy)).retry_policy == RetryPolicy(
        retry_on=frozenset({"5xx", "reset", "connect-failure", "retriable-status-codes"}),
        num_retries=3,
        per_try_timeout=0.5,
        per_try_idle_timeout=0.2,
        retriable_status_codes=frozenset({409, 503}),
        base_interval=0.1,
        max_interval=0.5,
        retry_other_hosts=True,
        host_selection_retry_max_attempts=5,
    )


def test_retry_policy_defaults_follow_envoy() -> None:
    policy = action_of(forward(retry_policy={"retry_on": "gateway-error"})).retry_policy
    assert policy == RetryPolicy(
        frozenset({"gateway-error"}),
        num_retries=1,
        per_try_timeout=0.0,
        base_interval=0.025,
        max_interval=0.25,
        retry_other_hosts=False,  # Envoy retries on any host without the previous_hosts predicate
        host_selection_retry_max_attempts=1,
    )
    backoff = action_of(forward(retry_policy={"retry_back_off": {"base_interval": "0.3s"}})).retry_policy
    assert backoff is not None
    assert (backoff.base_interval, backoff.max_interval) == (0.3, pytest.approx(3.0))
    assert backoff.retry_on == frozenset()
    untyped = {"retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}]}
    assert action_of(forward(retry_policy=untyped)).retry_policy.retry_other_hosts  # type: ignore[union-attr]
    assert action_of(forward()).retry_policy is None


def test_every_retry_condition_is_accepted() -> None:
    policy = action_of(forward(retry_policy={"retry_on": ",".join(sorted(RETRY_ON))})).retry_policy
    assert policy is not None
    assert policy.retry_on == RETRY_ON


def test_route_retry_policy_replaces_the_virtual_hosts() -> None:
    doc = with_vhost(
        {"retry_policy": {"retry_on": "5xx", "num_retries": 4}, "per_request_buffer_limit_bytes": 1000},
        route(route=FORWARD),
        route({"prefix": "/own"}, route=FORWARD | {"retry_policy": {"retry_on": "reset"}}),
        {"match": {"prefix": "/big"}, "route": FORWARD, "per_request_buffer_limit_bytes": 5},
    )
    result, problems = compiled(doc)
    assert problems == []
    assert result is not None
    inherited, own, big = (r.action for r in result.virtual_hosts[0].routes)
    assert (
        isinstance(inherited, RouteAction) and isinstance(own, RouteAction) and isinstance(big, RouteAction)
    )
    assert inherited.retry_policy == RetryPolicy(frozenset({"5xx"}), num_retries=4, retry_other_hosts=False)
    assert own.retry_policy == RetryPolicy(frozenset({"reset"}), retry_other_hosts=False)
    assert (inherited.retry_buffer_limit, own.retry_buffer_limit, big.retry_buffer_limit) == (1000, 1000, 5)
    assert action_of(forward()).retry_buffer_limit == 64 * 1024


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param(
            {"retry_on": "5xx,timeout"},
            [f'{RP}.retry_on: "timeout" is not a retry condition; use {", ".join(sorted(RETRY_ON))}'],
            id="unknown-condition",
        ),
        pytest.param(
            {"retriable_status_codes": [99, 600]},
            [
                f"{RP}.retriable_status_codes[0]: 99 is not an HTTP status; use 100..599",
                f"{RP}.retriable_status_codes[1]: 600 is not an HTTP status; use 100..599",
            ],
            id="status-codes",
        ),
        pytest.param(
            {"retry_back_off": {}}, [f"{RP}.retry_back_off.base_interval: is required"], id="backoff-no-base"
        ),
        pytest.param(
            {"retry_back_off": {"base_interval": "0s"}},
            [f"{RP}.retry_back_off.base_interval: must be greater than 0"],
            id="backoff-zero-base",
        ),
        pytest.param(
            {"retry_back_off": {"base_interval": "1s", "max_interval": "0.5s"}},
            [f"{RP}.retry_back_off.max_interval: 0.5s is less than base_interval (1s)"],
            id="backoff-max-below-base",
        ),
        pytest.param(
            {"retry_host_predicate": [{"name": "envoy.retry_host_predicates.omit_canary_hosts"}]},
            [
                f'{RP}.retry_host_predicate[0]: "envoy.retry_host_predicates.omit_canary_hosts" is not supported; use envoy.retry_host_predicates.previous_hosts'
            ],
            id="other-predicate",
        ),
        pytest.param(
            {"host_selection_retry_max_attempts": -1},
            [f"{RP}.host_selection_retry_max_attempts: -1 must be at least 1"],
            id="attempts",
        ),
        pytest.param(
            {
                "retry_priority": {"name": "envoy.retry_priorities.previous_priorities"},
                "retriable_request_headers": [{"name": "x"}],
            },
            [f"{RP}.retry_priority: is not supported", f"{RP}.retriable_request_headers: is not supported"],
            id="unsupported-fields",
        ),
        pytest.param(
            {"per_try_timeout": "-1s"},
            [f"{RP}.per_try_timeout: must not be negative (got -1s)"],
            id="negative",
        ),
    ],
)
def test_retry_policy_rejections(policy: dict[str, Any], expected: list[str]) -> None:
    assert problems_of(forward(retry_policy=policy)) == expected


def test_virtual_host_retry_policy_rejection_names_the_virtual_host() -> None:
    doc = with_vhost({"retry_policy": {"retry_on": "sometimes"}})
    assert problems_of(doc) == [
        f'rc.virtual_hosts[0].retry_policy.retry_on: "sometimes" is not a retry condition; use {", ".join(sorted(RETRY_ON))}'
    ]


# --------------------------------------------------------------------------- hash_policy


def test_hash_policies() -> None:
    policies = [
        {"header": {"header_name": "X-User"}, "terminal": True},
        {"cookie": {"name": "session", "path": "/"}},
        {"connection_properties": {"source_ip": True}},
        {"query_parameter": {"name": "id"}},
    ]
    assert action_of(forward(hash_policy=policies)).hash_policy == (
        HashPolicy("header", "x-user", terminal=True),
        HashPolicy("cookie", "session"),
        HashPolicy("source_ip"),
        HashPolicy("query_parameter", "id"),
    )


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param(
            {"filter_state": {"key": "k"}},
            "filter_state: is not supported; use header, cookie, connection_properties or query_parameter",
            id="filter-state",
        ),
        pytest.param(
            {},
            ": a hash policy needs one of header, cookie, connection_properties or query_parameter",
            id="empty",
        ),
        pytest.param({"header": {}}, ".header.header_name: is required", id="header-name"),
        pytest.param({"cookie": {"path": "/"}}, ".cookie.name: is required", id="cookie-name"),
        pytest.param({"query_parameter": {}}, ".query_parameter.name: is required", id="query-name"),
        pytest.param(
            {"connection_properties": {}},
            ".connection_properties.source_ip: must be true (the one connection property)",
            id="source-ip-false",
        ),
        pytest.param(
            {
                "header": {
                    "header_name": "x",
                    "regex_rewrite": {"pattern": {"regex": "a"}, "substitution": "b"},
                }
            },
            ".header.regex_rewrite: is not supported; meshproxy hashes the whole header value",
            id="header-rewrite",
        ),
    ],
)
def test_hash_policy_rejections(policy: dict[str, Any], expected: str) -> None:
    separator = "." if expected[0].isalpha() else ""
    assert problems_of(forward(hash_policy=[policy])) == [f"{R0}.route.hash_policy[0]{separator}{expected}"]


# --------------------------------------------------------------------------- max_stream_duration


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        pytest.param(None, (0.0, None), id="absent"),
        pytest.param({}, (0.0, None), id="empty"),
        pytest.param({"max_stream_duration": "30s"}, (30.0, None), id="limit"),
        pytest.param({"grpc_timeout_header_max": "0s"}, (0.0, 0.0), id="grpc-uncapped"),
        pytest.param({"max_stream_duration": "1s", "grpc_timeout_header_max": "5s"}, (1.0, 5.0), id="both"),
    ],
)
def test_max_stream_duration(duration: dict[str, Any] | None, expected: tuple[float, float | None]) -> None:
    action = action_of(forward() if duration is None else forward(max_stream_duration=duration))
    assert (action.max_stream_duration, action.grpc_timeout_header_max) == expected


def test_max_stream_duration_rejections() -> None:
    doc = forward(max_stream_duration={"grpc_timeout_header_offset": "1s", "max_stream_duration": "-2s"})
    assert problems_of(doc) == [
        f"{R0}.route.max_stream_duration.grpc_timeout_header_offset: is not supported",
        f"{R0}.route.max_stream_duration.max_stream_duration: must not be negative (got -2s)",
    ]
