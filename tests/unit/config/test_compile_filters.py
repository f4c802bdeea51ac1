"""compile_filters: the HTTP filter registry (http_filters, in order, the router last) and
typed_per_filter_config at the three levels, with the fault filter's config and its refusals;
and the connection manager's local_reply_config (compile_local_reply)."""

# ruff: noqa: E501 (the tables hold whole expected messages; splitting them hides what users read)

from __future__ import annotations

from typing import Any

import pytest
from test_compile_listener import ROUTER, compiled, hcm, listener

from meshproxy.config.filter_config import Fault, FaultAbort, FaultDelay, Percent
from meshproxy.config.local_reply import BodyFormat, ReplyFilter
from meshproxy.config.model import HeaderMatcher, HttpConnectionManager, StringMatch

FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
LRL = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
ROUTER_FILTER = {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}
TC = "l.filter_chains[0].filters[0].typed_config"
FILTERS = f"{TC}.http_filters"
VHOST = f"{TC}.route_config.virtual_hosts[0]"


def fault_filter(name: str = "envoy.filters.http.fault", **config: Any) -> dict[str, Any]:
    return {"name": name, "typed_config": {"@type": FAULT} | config}


def manager(*filters: dict[str, Any], **fields: Any) -> tuple[HttpConnectionManager | None, list[str]]:
    result, problems = compiled(
        listener(filter_chains=[{"filters": [hcm(http_filters=list(filters), **fields)]}])
    )
    if result is None:
        return None, problems
    m = result.filter_chains[0].filter
    assert isinstance(m, HttpConnectionManager)
    return m, problems


def test_the_fault_filter_compiles_every_field() -> None:
    m, problems = manager(
        fault_filter(
            delay={"fixed_delay": "0.25s", "percentage": {"numerator": 5, "denominator": "TEN_THOUSAND"}},
            abort={"grpc_status": 14, "percentage": {"numerator": 200}},
            upstream_cluster="backend",
            headers=[{"name": "X-Chaos", "string_match": {"exact": "on"}}],
            downstream_nodes=["node-a"],
            max_active_faults=3,
            delay_percent_runtime="ignored.key",
        ),
        ROUTER_FILTER,
    )
    assert problems == [] and m is not None
    assert [(f.name, f.config) for f in m.http_filters] == [
        (
            "envoy.filters.http.fault",
            Fault(
                delay=FaultDelay(Percent(5, 10_000), fixed=0.25),
                abort=FaultAbort(Percent(100, 100), grpc_status=14),  # capped at 100%
                upstream_cluster="backend",
                headers=(HeaderMatcher("x-chaos", StringMatch("exact", "on")),),
                downstream_nodes=("node-a",),
                max_active_faults=3,
            ),
        )
    ]


def test_header_controlled_faults_and_envoys_defaults() -> None:
    m, problems = manager(fault_filter(delay={"header_delay": {}}, abort={"header_abort": {}}), ROUTER_FILTER)
    assert problems == [] and m is not None
    # An absent percentage is 0% (the proto's default); an absent max_active_faults no limit.
    assert m.http_filters[0].config == Fault(
        delay=FaultDelay(Percent(0), from_header=True), abort=FaultAbort(Percent(0), from_header=True)
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"abort": {"http_status": 99}},
            f"{FILTERS}[0].typed_config.abort.http_status: 99 is not an HTTP status (200..599)",
        ),
        (
            {"abort": {"percentage": {"numerator": 1}}},
            f"{FILTERS}[0].typed_config.abort: an abort needs http_status, grpc_status or header_abort",
        ),
        (
            {"delay": {"fixed_delay": "0s"}},
            f"{FILTERS}[0].typed_config.delay.fixed_delay: must be more than 0",
        ),
        ({"delay": {}}, f"{FILTERS}[0].typed_config.delay: a delay needs fixed_delay or header_delay"),
        (
            {"abort": {"http_status": 503, "percentage": {"numerator": 1, "denominator": 7}}},
            f"{FILTERS}[0].typed_config.abort.percentage.denominator: 7 is not a DenominatorType",
        ),
        (
            {"response_rate_limit": {"fixed_limit": {"limit_kbps": 1}}},
            f"{FILTERS}[0].typed_config.response_rate_limit: is not supported: response bandwidth limits are not injected",
        ),
        (
            {"headers": [{"string_match": {"exact": "x"}}]},
            f"{FILTERS}[0].typed_config.headers[0].name: is required",
        ),
    ],
)
def test_a_bad_fault_config_is_refused_with_its_path(config: dict[str, Any], expected: str) -> None:
    assert manager(fault_filter(**config), ROUTER_FILTER) == (None, [expected])


def test_filters_keep_their_order_and_unique_names() -> None:
    rl = {
        "name": "limit",
        "typed_config": {
            "@type": LRL,
            "stat_prefix": "rl",
            "token_bucket": {"max_tokens": 1, "fill_interval": "1s"},
        },
    }
    m, problems = manager(fault_filter("first"), rl, fault_filter("last"), ROUTER_FILTER)
    assert problems == [] and m is not None
    assert [f.name for f in m.http_filters] == ["first", "limit", "last"]
    assert manager(fault_filter("same"), fault_filter("same"), ROUTER_FILTER)[1] == [
        f'{FILTERS}[1].name: "same" names an earlier filter too; filter names must be unique'
    ]


def test_unknown_disabled_and_optional_filters() -> None:
    cors = {"name": "envoy.filters.http.buffer"}
    assert manager(cors, ROUTER_FILTER)[1] == [
        f'{FILTERS}[0]: http filter "envoy.filters.http.buffer" (no typed_config) is not supported; meshproxy runs '
        "those of docs/configuration.md#http-filters (mark a filter is_optional to have it skipped)"
    ]
    m, problems = manager(cors | {"is_optional": True}, fault_filter() | {"disabled": True}, ROUTER_FILTER)
    assert problems == [] and m is not None and m.http_filters == ()
    assert manager({"name": "envoy.filters.http.fault"}, ROUTER_FILTER)[1] == [
        f"{FILTERS}[0].typed_config: is required: a envoy.extensions.filters.http.fault.v3.HTTPFault"
    ]


def route_config(**levels: dict[str, Any]) -> dict[str, Any]:
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200}}
    vhost = {"name": "all", "domains": ["*"], "routes": [route | levels.get("route", {})]} | levels.get(
        "vhost", {}
    )
    return {"virtual_hosts": [vhost]} | levels.get("config", {})


def test_per_filter_config_at_each_level_is_compiled_by_its_filter() -> None:
    abort = {"@type": FAULT, "abort": {"http_status": 418, "percentage": {"numerator": 100}}}
    unknown = {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"disabled": True}}
    m, problems = manager(
        fault_filter(),
        ROUTER_FILTER,
        route_config=route_config(
            route={
                "typed_per_filter_config": {
                    "envoy.filters.http.fault": abort,
                    "envoy.filters.http.buffer": unknown,
                }
            },
            vhost={"typed_per_filter_config": {"envoy.filters.http.fault": abort}},
            config={"typed_per_filter_config": {"envoy.filters.http.fault": abort}},
        ),
    )
    assert problems == [] and m is not None
    teapot = Fault(abort=FaultAbort(Percent(100), http_status=418))
    rc = m.route_config
    vhost = rc.virtual_hosts[0]
    # A filter meshproxy does not run cannot be changed by its per-route config: not kept.
    assert (
        rc.filter_configs
        == vhost.filter_configs
        == vhost.routes[0].filter_configs
        == (("envoy.filters.http.fault", teapot),)
    )


@pytest.mark.parametrize(
    ("per_route", "expected"),
    [
        (
            {"@type": LRL, "stat_prefix": "x"},
            "envoy.filters.http.local_ratelimit has no per-route configuration; configure it in http_filters",
        ),
        (
            {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True},
            "FilterConfig (is_optional, disabled) is not supported; give the filter's own config",
        ),
        (
            {"@type": FAULT, "abort": {"http_status": 1}},
            "abort.http_status: 1 is not an HTTP status (200..599)",
        ),
    ],
)
def test_per_filter_config_refusals_name_their_path(per_route: dict[str, Any], expected: str) -> None:
    levels = route_config(vhost={"typed_per_filter_config": {"f": per_route}})
    _, problems = manager(fault_filter(), ROUTER_FILTER, route_config=levels)
    sep = "." if expected.startswith("abort") else ": "
    assert problems == [f'{VHOST}.typed_per_filter_config["f"]{sep}{expected}']


# ---------------------------------------------------------------------------- local_reply_config

STATUS_404 = {"status_code_filter": {"comparison": {"op": "GE", "value": {"default_value": 404}}}}


def test_local_reply_config_compiles_mappers_and_formats() -> None:
    config = {
        "mappers": [{"filter": STATUS_404, "status_code": 410, "body": {"inline_string": "gone"}}],
        "body_format": {"text_format": "%RESPONSE_CODE%:%REQ(x-a?x-b):3%", "content_type": "text/x"},
    }
    m, problems = manager(ROUTER_FILTER, local_reply_config=config)
    assert problems == [] and m is not None and m.local_reply is not None
    (mapper,) = m.local_reply.mappers
    assert (mapper.filter, mapper.status, mapper.body) == (
        ReplyFilter("status", op="GE", status=404),
        410,
        b"gone",
    )
    assert m.local_reply.body_format == BodyFormat(
        "text/x", text=(("RESPONSE_CODE", ""), ("text", ":"), ("REQ", ("x-a", "x-b", 3)))
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"body_format": {"text_format": "%START_TIME% %DOWNSTREAM_REMOTE_ADDRESS%"}},
            [
                'body_format.text_format: "%START_TIME%" is not a command operator meshproxy formats; use '
                "%LOCAL_REPLY_BODY%, %RESPONSE_CODE%, %RESPONSE_FLAGS% and %REQ(header)%",
                'body_format.text_format: "%DOWNSTREAM_REMOTE_ADDRESS%" is not a command operator meshproxy '
                "formats; use %LOCAL_REPLY_BODY%, %RESPONSE_CODE%, %RESPONSE_FLAGS% and %REQ(header)%",
            ],
        ),
        ({"mappers": [{"status_code": 500}]}, ["mappers[0].filter: is required"]),
        (
            {"mappers": [{"filter": {"duration_filter": {}}}]},
            [
                "mappers[0].filter.duration_filter: is not supported; use status_code_filter, header_filter, "
                "response_flag_filter, and_filter or or_filter"
            ],
        ),
        (
            {"mappers": [{"filter": STATUS_404, "status_code": 99}]},
            ["mappers[0].status_code: 99 is not an HTTP status (200..599)"],
        ),
        (
            {"body_format": {"json_format": {"a": ["%RESPONSE_CODE%"]}}},
            ["body_format.json_format.a: lists are not supported in json_format"],
        ),
        (
            {"mappers": [{"filter": STATUS_404, "body": {"filename": "/etc/passwd"}}]},
            ["mappers[0].body: give inline_string or inline_bytes"],
        ),
    ],
)
def test_a_bad_local_reply_config_is_refused_with_its_path(
    config: dict[str, Any], expected: list[str]
) -> None:
    assert manager(ROUTER_FILTER, local_reply_config=config) == (
        None,
        [f"{TC}.local_reply_config.{problem}" for problem in expected],
    )
