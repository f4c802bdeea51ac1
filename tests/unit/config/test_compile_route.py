"""compile_route_configuration: virtual hosts and domains, route matches (actions: test_compile_route_actions)."""

# ruff: noqa: E501 (the tables hold whole expected messages; splitting them hides what users read)

from __future__ import annotations

from typing import Any

import pytest
from route_docs import (
    FORWARD,
    R0,
    WILDCARD_RULE,
    compiled,
    only_route,
    problems_of,
    route,
    route_config,
    vhosts,
)

from meshproxy.config.model import (
    HeaderMatcher,
    StringMatch,
)
from meshproxy.config.regex import compile_regex


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        pytest.param(
            vhosts(["a.example", "*"], ["A.example"]),
            [
                'rc.virtual_hosts[1].domains[0]: "a.example" is already a domain of virtual_hosts[0]; '
                "a domain may appear only once across virtual hosts"
            ],
            id="duplicate-domain",
        ),
        pytest.param(
            vhosts(["*"], ["*"]),
            [
                'rc.virtual_hosts[1].domains[0]: "*" is already a domain of virtual_hosts[0]; '
                'only one virtual host may use the wildcard domain "*"'
            ],
            id="two-wildcard-vhosts",
        ),
        pytest.param(
            vhosts(["a.*.example", "*a*", "**"]),
            [
                f'rc.virtual_hosts[0].domains[0]: "a.*.example": {WILDCARD_RULE}',
                f'rc.virtual_hosts[0].domains[1]: "*a*": {WILDCARD_RULE}',
                f'rc.virtual_hosts[0].domains[2]: "**": {WILDCARD_RULE}',
            ],
            id="wildcard-placement",
        ),
        pytest.param(
            {"virtual_hosts": [{"name": "", "domains": [""]}, {"name": "x"}]},
            [
                "rc.virtual_hosts[0].name: is required",
                'rc.virtual_hosts[1].domains: needs at least one domain (use "*" to match every host)',
                "rc.virtual_hosts[0].domains[0]: must not be empty",
            ],
            id="vhost-name-and-domains",
        ),
        pytest.param(
            route_config(vhds={"config_source": {"ads": {}}}),
            ["rc.vhds: vhds needs dynamic_resources, not supported yet; list virtual_hosts inline"],
            id="vhds",
        ),
        pytest.param(
            route_config({"route": FORWARD}),
            [f"{R0}.match: is required"],
            id="no-match",
        ),
        pytest.param(
            route_config({"match": {"prefix": "/"}}),
            [f"{R0}: a route needs one of route, redirect or direct_response"],
            id="no-action",
        ),
        pytest.param(
            route_config(route(non_forwarding_action={})),
            [f"{R0}.non_forwarding_action: is not supported; use route, redirect or direct_response"],
            id="non-forwarding-action",
        ),
        pytest.param(
            route_config(route({})),
            [f"{R0}.match: a route match needs one of prefix, path, safe_regex or path_separated_prefix"],
            id="no-path-specifier",
        ),
        pytest.param(
            route_config(route({"connect_matcher": {}})),
            [
                f"{R0}.match.connect_matcher: is not supported; use prefix, path, safe_regex or path_separated_prefix"
            ],
            id="connect-matcher",
        ),
        pytest.param(
            route_config(
                route({"path_match_policy": {"name": "envoy.path.match.uri_template.uri_template_matcher"}})
            ),
            [
                f"{R0}.match.path_match_policy: is not supported; use prefix, path, safe_regex or path_separated_prefix"
            ],
            id="path-match-policy",
        ),
        pytest.param(
            route_config(route({"safe_regex": {"regex": "/(unclosed"}})),
            [f'{R0}.match.safe_regex.regex: "/(unclosed" does not compile: missing ): /(unclosed'],
            id="bad-regex",
        ),
        pytest.param(
            route_config(route({"safe_regex": {"regex": ""}})),
            [f"{R0}.match.safe_regex.regex: is required"],
            id="empty-regex",
        ),
        pytest.param(
            route_config(route({"path_separated_prefix": "api"})),
            [f'{R0}.match.path_separated_prefix: "api" must start with "/"'],
            id="separated-prefix-slash",
        ),
        pytest.param(
            route_config(route({"path_separated_prefix": "/api/"})),
            [
                f'{R0}.match.path_separated_prefix: "/api/" must not end with "/" (to match every path, use prefix "/")'
            ],
            id="separated-prefix-trailing",
        ),
        pytest.param(
            route_config(route({"path_separated_prefix": "/a?b"})),
            [f'{R0}.match.path_separated_prefix: "/a?b" must not contain "?" or "#"'],
            id="separated-prefix-query",
        ),
        pytest.param(
            route_config(
                route({"prefix": "/", "grpc": {}, "runtime_fraction": {"default_value": {"numerator": 1}}})
            ),
            [
                f"{R0}.match.runtime_fraction: is not supported; the route would match more requests than configured",
            ],
            id="unevaluated-match-conditions",
        ),
        pytest.param(
            route_config(
                route({"prefix": "/", "headers": [{"name": "x", "range_match": {"start": 1, "end": 9}}]})
            ),
            [f"{R0}.match.headers[0].range_match: is not supported; use string_match with safe_regex"],
            id="range-match",
        ),
        pytest.param(
            route_config(route({"prefix": "/", "headers": [{"present_match": True}]})),
            [f"{R0}.match.headers[0].name: is required"],
            id="header-name",
        ),
        pytest.param(
            route_config(route({"prefix": "/", "headers": [{"name": "x", "string_match": {"prefix": ""}}]})),
            [
                f"{R0}.match.headers[0].string_match.prefix: an empty prefix matches everything; it must not be empty"
            ],
            id="empty-prefix-matcher",
        ),
        pytest.param(
            route_config(
                route({"prefix": "/", "headers": [{"name": "x", "safe_regex_match": {"regex": "["}}]})
            ),
            [f'{R0}.match.headers[0].safe_regex_match.regex: "[" does not compile: missing ]: ['],
            id="legacy-regex-matcher",
        ),
        pytest.param(
            route_config(route({"prefix": "/", "query_parameters": [{"name": "q", "string_match": {}}]})),
            [
                f"{R0}.match.query_parameters[0].string_match: a string matcher needs one of exact, prefix, suffix, "
                "contains or safe_regex"
            ],
            id="empty-string-matcher",
        ),
        pytest.param(
            route_config(route({"prefix": "/", "query_parameters": [{"present_match": True}]})),
            [f"{R0}.match.query_parameters[0].name: is required"],
            id="query-name",
        ),
        pytest.param(
            route_config(route(route={"cluster_header": "x-cluster"})),
            [f"{R0}.route.cluster_header: is not supported; name the cluster, or use weighted_clusters"],
            id="cluster-header",
        ),
        pytest.param(
            route_config(route(route={"timeout": "1s"})),
            [f"{R0}.route: a route action needs cluster or weighted_clusters"],
            id="no-cluster",
        ),
        pytest.param(
            route_config(route(route={"cluster": ""})),
            [f"{R0}.route.cluster: must not be empty"],
            id="empty-cluster",
        ),
        pytest.param(
            route_config(route(route={"weighted_clusters": {"clusters": [{"name": "a", "weight": 0}]}})),
            [f"{R0}.route.weighted_clusters: the sum of the cluster weights must be greater than 0"],
            id="zero-weights",
        ),
        pytest.param(
            route_config(
                route(
                    route={
                        "weighted_clusters": {
                            "clusters": [{"name": "a", "weight": 1}, {"name": "b", "weight": 2}],
                            "total_weight": 100,
                        }
                    }
                )
            ),
            [f"{R0}.route.weighted_clusters.total_weight: is 100 but the cluster weights sum to 3"],
            id="total-weight",
        ),
        pytest.param(
            route_config(
                route(route={"weighted_clusters": {"clusters": [{"cluster_header": "x", "weight": 1}]}})
            ),
            [f"{R0}.route.weighted_clusters.clusters[0].cluster_header: is not supported; name the cluster"],
            id="weighted-cluster-header",
        ),
        pytest.param(
            route_config(route(route={"cluster": "a", "auto_host_rewrite": True})),
            [f"{R0}.route.auto_host_rewrite: is not supported; use host_rewrite_literal"],
            id="auto-host-rewrite",
        ),
        pytest.param(
            route_config(
                route(
                    route={
                        "cluster": "a",
                        "regex_rewrite": {"pattern": {"regex": "(a)"}, "substitution": "\\1\\d"},
                    }
                )
            ),
            [
                f'{R0}.route.regex_rewrite.substitution: "\\d" is not valid; only \\0 to \\9 and \\\\ may follow '
                "a backslash"
            ],
            id="rewrite-escape",
        ),
        pytest.param(
            route_config(
                route(
                    route={
                        "cluster": "a",
                        "prefix_rewrite": "/x",
                        "regex_rewrite": {"pattern": {"regex": "(a)"}, "substitution": "\\2"},
                    }
                )
            ),
            [
                f"{R0}.route.regex_rewrite.substitution: \\2 names a group the pattern does not have (it has 1)",
                f"{R0}.route: prefix_rewrite and regex_rewrite cannot both be set",
            ],
            id="rewrite-group-and-both",
        ),
        pytest.param(
            route_config(route(route={"cluster": "a", "timeout": "-2s"})),
            [f"{R0}.route.timeout: must not be negative (got -2s)"],
            id="negative-timeout",
        ),
        pytest.param(
            route_config(route(direct_response={"status": 199}), route(direct_response={"status": 600})),
            [
                f"{R0}.direct_response.status: 199 is not a valid status; Envoy requires 200..599",
                "rc.virtual_hosts[0].routes[1].direct_response.status: 600 is not a valid status; Envoy requires 200..599",
            ],
            id="direct-response-status",
        ),
        pytest.param(
            route_config(route(direct_response={"status": 200, "body": {"filename": "/etc/motd"}})),
            [
                f"{R0}.direct_response.body.filename: is not supported; give the body as inline_string or inline_bytes"
            ],
            id="direct-response-file",
        ),
        pytest.param(
            route_config(route(redirect={"port_redirect": 70000})),
            [f"{R0}.redirect.port_redirect: port 70000 is out of range; use 1..65535"],
            id="redirect-port",
        ),
        pytest.param(
            route_config(
                route(route=FORWARD, request_headers_to_add=[{"header": {"key": ":path", "value": "/"}}]),
                request_headers_to_remove=["host", "x ok"],
                response_headers_to_add=[
                    {"header": {"key": "x-a", "value": "1\r\n"}},
                    {
                        "header": {"key": "x-b", "value": "1"},
                        "append": True,
                        "append_action": "ADD_IF_ABSENT",
                    },
                ],
            ),
            [
                f'{R0}.request_headers_to_add[0].header.key: ":path" is not a valid header name (pseudo-headers '
                "cannot be added or removed)",
                'rc.request_headers_to_remove[0]: "host" cannot be removed',
                'rc.request_headers_to_remove[1]: "x ok" is not a valid header name',
                "rc.response_headers_to_add[0].header.value: must not contain CR, LF or NUL",
                "rc.response_headers_to_add[1].append: is deprecated and cannot be combined with append_action; "
                "use append_action",
            ],
            id="header-mutations",
        ),
        pytest.param(
            route_config(
                route(
                    route=FORWARD,
                    request_headers_to_add=[
                        {"header": {"key": "x-client", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}},
                        {"header": {"key": "x-share", "value": "50%"}},
                    ],
                )
            ),
            [
                f"{R0}.request_headers_to_add[0].header.value: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%' asks "
                "for a substitution (%…%), which is not supported; write a literal % as %%",
                f"{R0}.request_headers_to_add[1].header.value: '50%' asks for a substitution (%…%), which is "
                "not supported; write a literal % as %%",
            ],
            id="header-substitution",
        ),
        pytest.param(
            route_config(
                route(
                    route={
                        **FORWARD,
                        "request_mirror_policies": [
                            {"cluster": "m", "cluster_header": "x-mirror"},
                            {},
                            {"cluster_header": "x mirror"},
                        ],
                    }
                )
            ),
            [
                f"{R0}.route.request_mirror_policies[0]: give exactly one of cluster and cluster_header",
                f"{R0}.route.request_mirror_policies[1]: give exactly one of cluster and cluster_header",
                f'{R0}.route.request_mirror_policies[2].cluster_header: "x mirror" is not a valid header name',
            ],
            id="mirror-cluster-or-header",
        ),
    ],
)
def test_route_configuration_rejections(doc: dict[str, Any], expected: list[str]) -> None:
    assert problems_of(doc) == expected


def test_a_literal_percent_in_a_header_value_is_written_twice() -> None:
    doc = route_config(
        route(route=FORWARD, request_headers_to_add=[{"header": {"key": "x-share", "value": "50%%"}}])
    )
    result, _ = compiled(doc)
    assert result is not None
    (added,) = result.virtual_hosts[0].routes[0].request_headers.to_add
    assert added.value == "50%"


def test_domains_are_lower_cased_and_wildcards_accepted() -> None:
    result, _ = compiled(vhosts(["API.Example.com", "*.example.com", "*-dev.example.com", "api.*"], ["*"]))
    assert result is not None
    assert result.virtual_hosts[0].domains == (
        "api.example.com",
        "*.example.com",
        "*-dev.example.com",
        "api.*",
    )
    assert [v.name for v in result.virtual_hosts] == ["v0", "v1"]


@pytest.mark.parametrize(
    ("match", "kind", "path"),
    [
        ({"prefix": "/api"}, "prefix", "/api"),
        ({"prefix": ""}, "prefix", ""),
        ({"path": "/exact"}, "path", "/exact"),
        ({"safe_regex": {"regex": "/v[0-9]+"}}, "regex", "/v[0-9]+"),
        ({"path_separated_prefix": "/api"}, "separated_prefix", "/api"),
    ],
)
def test_path_specifiers(match: dict[str, Any], kind: str, path: str) -> None:
    compiled_match = only_route(route_config(route(match))).match
    assert (compiled_match.path_kind, compiled_match.path, compiled_match.case_sensitive) == (
        kind,
        path,
        True,
    )
    assert (compiled_match.pattern is not None) == (kind == "regex")


def test_case_sensitive_false() -> None:
    assert (
        only_route(route_config(route({"prefix": "/A", "case_sensitive": False}))).match.case_sensitive
        is False
    )


@pytest.mark.parametrize(
    ("matcher", "expected"),
    [
        ({"exact_match": "v"}, StringMatch("exact", "v")),
        ({"prefix_match": "v"}, StringMatch("prefix", "v")),
        ({"suffix_match": "v"}, StringMatch("suffix", "v")),
        ({"contains_match": "v"}, StringMatch("contains", "v")),
        ({"safe_regex_match": {"regex": "v+"}}, StringMatch("regex", "v+", pattern=compile_regex("v+"))),
        ({"string_match": {"exact": "", "ignore_case": True}}, StringMatch("exact", "", ignore_case=True)),
        ({"string_match": {"suffix": ".svc"}}, StringMatch("suffix", ".svc")),
        ({"string_match": {"contains": "mid"}}, StringMatch("contains", "mid")),
        (
            {"string_match": {"safe_regex": {"regex": "a|b"}}},
            StringMatch("regex", "a|b", pattern=compile_regex("a|b")),
        ),
    ],
)
def test_header_string_matchers_new_and_deprecated_forms(
    matcher: dict[str, Any], expected: StringMatch
) -> None:
    headers = [{"name": "X-Test", **matcher}]
    (compiled_header,) = only_route(route_config(route({"prefix": "/", "headers": headers}))).match.headers
    assert compiled_header == HeaderMatcher("x-test", expected)


def test_header_presence_invert_and_missing_as_empty() -> None:
    headers = [
        {"name": "a"},
        {"name": "b", "present_match": False},
        {"name": "c", "exact_match": "", "invert_match": True, "treat_missing_header_as_empty": True},
    ]
    compiled_headers = only_route(route_config(route({"prefix": "/", "headers": headers}))).match.headers
    assert compiled_headers == (
        HeaderMatcher("a", None),
        HeaderMatcher("b", None, present=False),
        HeaderMatcher("c", StringMatch("exact", ""), invert=True, missing_as_empty=True),
    )


def test_query_parameter_matchers() -> None:
    query = [
        {"name": "debug", "present_match": True},
        {"name": "v", "string_match": {"prefix": "2", "ignore_case": True}},
        {"name": "bare"},
    ]
    compiled_query = only_route(
        route_config(route({"prefix": "/", "query_parameters": query}))
    ).match.query_parameters
    assert [(q.name, q.match, q.present) for q in compiled_query] == [
        ("debug", None, True),
        ("v", StringMatch("prefix", "2", ignore_case=True), True),
        ("bare", None, True),
    ]
