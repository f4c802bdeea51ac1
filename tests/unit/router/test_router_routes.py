"""Route selection inside a virtual host: path kinds, header and query matchers, decisions."""

from __future__ import annotations

import pytest

from meshproxy.config.model import (
    DirectResponse,
    HeaderMatcher,
    HeaderMutations,
    HeaderValueOption,
    QueryParameterMatcher,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)
from meshproxy.config.regex import compile_regex
from meshproxy.router.table import RouteTable


def table(*routes: Route) -> RouteTable:
    return RouteTable(RouteConfiguration("rc", (VirtualHost("v", ("*",), routes),)))


def route(kind: str, path: str, name: str = "r", **match: object) -> Route:
    pattern = compile_regex(path) if kind == "regex" else None
    return Route(RouteMatch(kind, path, pattern=pattern, **match), RouteAction(cluster="c"), name=name)  # type: ignore[arg-type]


def matched(t: RouteTable, target: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> str | None:
    decision = t.route(b"host", target, headers or [])
    assert decision is not None
    return None if decision.route is None else decision.route.name


def test_routes_are_tried_in_order_first_match_wins() -> None:
    t = table(route("prefix", "/", "root"), route("prefix", "/api", "api"))
    assert matched(t, b"/api/x") == "root"
    t = table(route("prefix", "/api", "api"), route("prefix", "/", "root"))
    assert matched(t, b"/api/x") == "api"
    assert matched(t, b"/other") == "root"


def test_no_route_gives_a_decision_without_route_or_mutations() -> None:
    t = table(route("path", "/a"))
    decision = t.route(b"host", b"/b", [])
    assert decision is not None
    assert decision.route is None
    assert decision.vhost.name == "v"
    assert decision.request_mutations == () and decision.response_mutations == ()


@pytest.mark.parametrize(
    ("target", "hit"),
    [
        (b"/api", True),
        (b"/apix", True),
        (b"/api/v1?x=1", True),
        (b"/ap?i", False),
        (b"/ap#i", False),
        (b"/API", False),
    ],
)
def test_prefix_matches_the_path_part(target: bytes, hit: bool) -> None:
    assert (matched(table(route("prefix", "/api")), target) == "r") is hit


def test_prefix_case_insensitive() -> None:
    t = table(route("prefix", "/API", case_sensitive=False))
    assert matched(t, b"/api/x") == "r"
    assert matched(t, b"/Api") == "r"
    assert matched(t, b"/ap") is None


def test_prefix_containing_a_query_never_matches() -> None:
    assert matched(table(route("prefix", "/a?b")), b"/a?b") is None


@pytest.mark.parametrize("target", [b"", b"/", b"?q=1", b"#f", b"/anything/at/all"])
def test_empty_prefix_matches_everything(target: bytes) -> None:
    assert matched(table(route("prefix", "")), target) == "r"


@pytest.mark.parametrize(
    ("target", "hit"),
    [(b"/a", True), (b"/a?x=1", True), (b"/a#frag", True), (b"/a/", False), (b"/ab", False), (b"/A", False)],
)
def test_exact_path(target: bytes, hit: bool) -> None:
    assert (matched(table(route("path", "/a")), target) == "r") is hit


def test_exact_path_case_insensitive() -> None:
    t = table(route("path", "/Abc", case_sensitive=False))
    assert matched(t, b"/aBC?x") == "r"
    assert matched(t, b"/abcd") is None


@pytest.mark.parametrize(
    ("target", "hit"),
    [
        (b"/a/12", True),
        (b"/a/12?x=y", True),
        (b"/a/12x", False),
        (b"/b/a/12", False),
        (b"/a/", False),
    ],
)
def test_regex_must_match_the_whole_path(target: bytes, hit: bool) -> None:
    assert (matched(table(route("regex", "/a/[0-9]+")), target) == "r") is hit


def test_regex_ignores_case_sensitive() -> None:
    t = table(route("regex", "/a", case_sensitive=False))
    assert matched(t, b"/A") is None


def test_regex_sees_non_ascii_bytes_as_utf8() -> None:
    t = table(route("regex", "/caf."))
    assert matched(t, "/café".encode()) == "r"


@pytest.mark.parametrize(
    ("target", "hit"),
    [
        (b"/api/dev", True),
        (b"/api/dev/", True),
        (b"/api/dev/v1", True),
        (b"/api/dev?param=true", True),
        (b"/api/dev#frag", True),
        (b"/api/developer", False),
        (b"/api/de", False),
        (b"/API/dev", False),
    ],
)
def test_separated_prefix(target: bytes, hit: bool) -> None:
    # The examples of Envoy's RouteMatch.path_separated_prefix documentation.
    assert (matched(table(route("separated_prefix", "/api/dev")), target) == "r") is hit


def test_separated_prefix_case_insensitive() -> None:
    t = table(route("separated_prefix", "/Api/Dev", case_sensitive=False))
    assert matched(t, b"/api/dev/x") == "r"
    assert matched(t, b"/API/DEV") == "r"
    assert matched(t, b"/api/devx") is None


def header_route(*matchers: HeaderMatcher) -> RouteTable:
    return table(route("prefix", "/", headers=matchers))


def test_repeated_header_values_are_joined_with_commas() -> None:
    t = header_route(HeaderMatcher("x", StringMatch("exact", "a,b")))
    assert matched(t, b"/", [(b"x", b"a"), (b"y", b"-"), (b"x", b"b")]) == "r"
    assert matched(t, b"/", [(b"x", b"a")]) is None


def test_all_header_matchers_must_hold() -> None:
    t = header_route(
        HeaderMatcher("x", StringMatch("exact", "1")), HeaderMatcher("y", StringMatch("prefix", "a"))
    )
    assert matched(t, b"/", [(b"x", b"1"), (b"y", b"abc")]) == "r"
    assert matched(t, b"/", [(b"x", b"1"), (b"y", b"bc")]) is None
    assert matched(t, b"/", [(b"y", b"abc")]) is None


# Envoy's HeaderUtility::matchHeaders for present_match, every corner:
# (present, invert, missing_as_empty, header there?) -> matches?
PRESENT_TABLE = [
    (True, False, False, True, True),
    (True, False, False, False, False),
    (False, False, False, True, False),
    (False, False, False, False, True),
    (True, True, False, True, False),
    (True, True, False, False, True),
    (False, True, False, True, True),
    (False, True, False, False, False),
    # treat_missing_header_as_empty: a missing header counts as present (and empty).
    (True, False, True, False, True),
    (False, False, True, False, False),
    (True, True, True, False, False),
    (False, True, True, False, True),
]


@pytest.mark.parametrize(("present", "invert", "missing_as_empty", "there", "hit"), PRESENT_TABLE)
def test_present_match(present: bool, invert: bool, missing_as_empty: bool, there: bool, hit: bool) -> None:
    t = header_route(
        HeaderMatcher("x", None, present=present, invert=invert, missing_as_empty=missing_as_empty)
    )
    headers = [(b"x", b"")] if there else []
    assert (matched(t, b"/", headers) == "r") is hit


# A string matcher: (header value or None for missing, invert, missing_as_empty) -> matches?
VALUE_TABLE = [
    (b"abc", False, False, True),
    (b"xyz", False, False, False),
    (b"abc", True, False, False),
    (b"xyz", True, False, True),
    # A missing header fails a value matcher, inverted or not ...
    (None, False, False, False),
    (None, True, False, False),
    # ... unless it is treated as the empty value, which the matcher then judges.
    (None, False, True, False),
    (None, True, True, True),
]


@pytest.mark.parametrize(("value", "invert", "missing_as_empty", "hit"), VALUE_TABLE)
def test_value_match_invert_and_missing(
    value: bytes | None, invert: bool, missing_as_empty: bool, hit: bool
) -> None:
    t = header_route(
        HeaderMatcher("x", StringMatch("prefix", "ab"), invert=invert, missing_as_empty=missing_as_empty)
    )
    headers = [] if value is None else [(b"x", value)]
    assert (matched(t, b"/", headers) == "r") is hit


def test_missing_as_empty_lets_an_empty_exact_match() -> None:
    t = header_route(HeaderMatcher("x", StringMatch("exact", ""), missing_as_empty=True))
    assert matched(t, b"/", []) == "r"


def test_pseudo_headers_come_from_the_request_line() -> None:
    t = header_route(
        HeaderMatcher(":authority", StringMatch("exact", "host")),
        HeaderMatcher(":path", StringMatch("prefix", "/p?")),
    )
    assert matched(t, b"/p?q", []) == "r"
    assert matched(t, b"/p", []) is None


def query_route(*matchers: QueryParameterMatcher) -> RouteTable:
    return table(route("prefix", "/", query_parameters=matchers))


@pytest.mark.parametrize(
    ("target", "hit"),
    [
        (b"/?a=1", True),
        (b"/?b=2&a=1", True),
        (b"/?a=1&a=2", True),
        (b"/?a=2&a=1", False),
        (b"/?a=1#frag", True),
        (b"/#?a=1", False),
        (b"/?aa=1", False),
        (b"/", False),
    ],
)
def test_query_exact_uses_the_first_value(target: bytes, hit: bool) -> None:
    assert (matched(query_route(QueryParameterMatcher("a", StringMatch("exact", "1"))), target) == "r") is hit


def test_query_values_are_matched_raw() -> None:
    t = query_route(QueryParameterMatcher("a", StringMatch("exact", "%41")))
    assert matched(t, b"/?a=%41") == "r"
    assert matched(t, b"/?a=A") is None


@pytest.mark.parametrize(
    ("target", "present", "hit"),
    [
        (b"/?a", True, True),
        (b"/?a=", True, True),
        (b"/?b=1", True, False),
        (b"/", True, False),
        (b"/?b=1", False, True),
        (b"/", False, True),
        (b"/?a", False, False),
    ],
)
def test_query_present_match(target: bytes, present: bool, hit: bool) -> None:
    t = query_route(QueryParameterMatcher("a", None, present=present))
    assert (matched(t, target) == "r") is hit


def test_query_regex_and_ignore_case() -> None:
    t = query_route(
        QueryParameterMatcher("a", StringMatch("regex", "[0-9]+", pattern=compile_regex("[0-9]+"))),
        QueryParameterMatcher("b", StringMatch("suffix", "XY", ignore_case=True)),
    )
    assert matched(t, b"/?a=12&b=wxy") == "r"
    assert matched(t, b"/?a=12x&b=wxy") is None


def _mut(tag: str) -> HeaderMutations:
    return HeaderMutations(to_add=(HeaderValueOption("x", tag),))


def test_decision_carries_mutation_levels_most_specific_first() -> None:
    wc_a = WeightedCluster("a", 1, request_headers=_mut("wc"), response_headers=_mut("wc-resp"))
    wc_b = WeightedCluster("b", 1)
    routed = Route(
        RouteMatch("prefix", "/"),
        RouteAction(weighted_clusters=(wc_a, wc_b), total_weight=2),
        request_headers=_mut("route"),
    )
    config = RouteConfiguration(
        "rc",
        (VirtualHost("v", ("*",), (routed,), request_headers=_mut("vhost")),),
        request_headers=_mut("config"),
        response_headers=_mut("config-resp"),
    )
    decision = RouteTable(config).route(b"h", b"/", [])
    assert decision is not None

    def tags(levels: tuple) -> list[bytes]:
        return [level.add[0][1] for level in levels]

    assert tags(decision.request_mutations) == [b"route", b"vhost", b"config"]
    assert decision.request_mutations_for(None) is decision.request_mutations
    assert tags(decision.request_mutations_for(wc_a)) == [b"wc", b"route", b"vhost", b"config"]
    assert tags(decision.request_mutations_for(wc_b)) == [b"route", b"vhost", b"config"]
    assert tags(decision.response_mutations_for(wc_a)) == [b"wc-resp", b"config-resp"]
    with pytest.raises(ValueError, match="not one of this route's"):
        decision.request_mutations_for(WeightedCluster("a", 1))


def test_decisions_are_built_once_and_shared() -> None:
    t = table(Route(RouteMatch("prefix", "/"), DirectResponse(200), name="d"))
    first = t.route(b"h", b"/a", [])
    assert first is t.route(b"other", b"/b", [(b"x", b"y")])
