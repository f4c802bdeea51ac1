"""Route actions: the weighted cluster pick, path rewrites, and redirect locations."""

from __future__ import annotations

from collections import Counter

import pytest

from meshproxy.config.model import (
    DirectResponse,
    Redirect,
    RegexRewrite,
    Route,
    RouteAction,
    RouteMatch,
    WeightedCluster,
)
from meshproxy.config.regex import compile_regex, parse_rewrite
from meshproxy.router.action import pick_cluster, redirect_location, rewrite_target


def test_single_cluster() -> None:
    assert pick_cluster(RouteAction(cluster="one"), 12345) == ("one", None)


@pytest.mark.parametrize("weights", [(1,), (3, 1), (0, 5, 2), (1, 0), (7, 11, 13), (100, 1, 0, 9)])
def test_weighted_pick_is_exact_over_every_value_mod_total(weights: tuple[int, ...]) -> None:
    clusters = tuple(WeightedCluster(f"c{i}", w) for i, w in enumerate(weights))
    action = RouteAction(weighted_clusters=clusters, total_weight=sum(weights))
    total = sum(weights)
    counts = Counter(pick_cluster(action, v)[0] for v in range(total))
    assert counts == Counter({c.name: c.weight for c in clusters if c.weight})
    # Only the value mod total matters, up to the top of the 32-bit range.
    for v in (0, total - 1, 2**32 - 1, 2**32 - total):
        assert pick_cluster(action, v) == pick_cluster(action, v % total)


def test_weighted_pick_walks_cumulative_ranges_in_order() -> None:
    a, b = WeightedCluster("a", 2), WeightedCluster("b", 3)
    action = RouteAction(weighted_clusters=(a, b), total_weight=5)
    assert [pick_cluster(action, v) for v in range(6)] == [
        ("a", a),
        ("a", a),
        ("b", b),
        ("b", b),
        ("b", b),
        ("a", a),
    ]


def forward(kind: str, path: str, case_sensitive: bool = True, **action: object) -> Route:
    pattern = compile_regex(path) if kind == "regex" else None
    match = RouteMatch(kind, path, case_sensitive=case_sensitive, pattern=pattern)  # type: ignore[arg-type]
    return Route(match, RouteAction(cluster="c", **action))  # type: ignore[arg-type]


def regex_rewrite(pattern: str, substitution: str) -> RegexRewrite:
    regex = compile_regex(pattern)
    return RegexRewrite(regex, substitution, parse_rewrite(substitution, regex.groups))


def test_no_rewrite_returns_the_same_object() -> None:
    target = b"/a/b?c=d"
    assert rewrite_target(forward("prefix", "/a"), target) is target
    assert rewrite_target(forward("prefix", "/a", prefix_rewrite=""), target) is target
    assert rewrite_target(Route(RouteMatch("prefix", "/"), DirectResponse(200)), target) is target


@pytest.mark.parametrize(
    ("route", "target", "expected"),
    [
        (forward("prefix", "/api/", prefix_rewrite="/"), b"/api/users?x=1", b"/users?x=1"),
        (forward("prefix", "/api", prefix_rewrite="/v2"), b"/api/users", b"/v2/users"),
        (forward("prefix", "/API", False, prefix_rewrite="/v2"), b"/api/users", b"/v2/users"),
        (forward("prefix", "", prefix_rewrite="/root"), b"/x?q", b"/root/x?q"),
        (forward("path", "/old", prefix_rewrite="/new"), b"/old?q=1", b"/new?q=1"),
        (forward("separated_prefix", "/api", prefix_rewrite="/v1"), b"/api/x", b"/v1/x"),
        (forward("regex", "/item/[0-9]+", prefix_rewrite="/items"), b"/item/12?full=1", b"/items?full=1"),
    ],
)
def test_prefix_rewrite_replaces_what_the_route_matched(route: Route, target: bytes, expected: bytes) -> None:
    assert rewrite_target(route, target) == expected


def test_regex_rewrite_substitutes_every_match_and_keeps_the_query() -> None:
    rewrite = regex_rewrite(r"^/service/([^/]+)(/.*)$", r"\2/instance/\1")
    route = forward("prefix", "/service", regex_rewrite=rewrite)
    assert (
        rewrite_target(route, b"/service/foo/v1/api?x=/service/a/b") == b"/v1/api/instance/foo?x=/service/a/b"
    )
    dashes = forward("prefix", "/", regex_rewrite=regex_rewrite("o", "0"))
    assert rewrite_target(dashes, b"/foo/boo#o") == b"/f00/b00#o"


def location(
    redirect: Redirect,
    target: bytes = b"/a/b?q=1",
    authority: bytes = b"example.com",
    scheme: bytes = b"http",
) -> bytes:
    return redirect_location(redirect, RouteMatch("prefix", "/a"), scheme, authority, target)


def test_plain_redirect_keeps_everything() -> None:
    assert location(Redirect()) == b"http://example.com/a/b?q=1"
    assert location(Redirect(), authority=b"example.com:8080") == b"http://example.com:8080/a/b?q=1"


@pytest.mark.parametrize(
    ("scheme", "new", "authority", "expected"),
    [
        (b"http", "https", b"example.com:80", b"https://example.com/a/b?q=1"),
        (b"http", "https", b"example.com:8080", b"https://example.com:8080/a/b?q=1"),
        (b"http", "https", b"example.com:443", b"https://example.com:443/a/b?q=1"),
        (b"https", "http", b"example.com:443", b"http://example.com/a/b?q=1"),
        (b"http", "http", b"example.com:80", b"http://example.com:80/a/b?q=1"),
        (b"http", "https", b"[::1]:80", b"https://[::1]/a/b?q=1"),
        (b"http", "https", b"[::1]", b"https://[::1]/a/b?q=1"),
    ],
)
def test_scheme_change_drops_the_old_default_port(
    scheme: bytes, new: str, authority: bytes, expected: bytes
) -> None:
    assert location(Redirect(scheme=new), authority=authority, scheme=scheme) == expected


def test_port_redirect_replaces_or_adds_the_port() -> None:
    assert location(Redirect(port=8443), authority=b"example.com:8080") == b"http://example.com:8443/a/b?q=1"
    assert location(Redirect(port=8443)) == b"http://example.com:8443/a/b?q=1"
    assert location(Redirect(port=8443), authority=b"[::1]:80") == b"http://[::1]:8443/a/b?q=1"


def test_host_redirect_drops_the_request_port() -> None:
    assert location(Redirect(host="other.org"), authority=b"example.com:8080") == b"http://other.org/a/b?q=1"
    assert location(Redirect(host="other.org", port=81)) == b"http://other.org:81/a/b?q=1"


def test_path_redirect_keeps_the_query_unless_it_has_its_own() -> None:
    assert location(Redirect(path="/new")) == b"http://example.com/new?q=1"
    assert location(Redirect(path="/new?own=1")) == b"http://example.com/new?own=1"
    assert location(Redirect(path="/new"), target=b"/a") == b"http://example.com/new"


def test_strip_query() -> None:
    assert location(Redirect(strip_query=True)) == b"http://example.com/a/b"
    assert location(Redirect(path="/new", strip_query=True)) == b"http://example.com/new"
    # A query that path_redirect carries itself is never stripped.
    assert location(Redirect(path="/new?own=1", strip_query=True)) == b"http://example.com/new?own=1"


def test_redirect_prefix_rewrite_replaces_the_matched_prefix() -> None:
    assert location(Redirect(prefix_rewrite="/z")) == b"http://example.com/z/b?q=1"
    assert location(Redirect(prefix_rewrite="/z", strip_query=True)) == b"http://example.com/z/b"


def test_redirect_regex_rewrite() -> None:
    redirect = Redirect(regex_rewrite=regex_rewrite("^/a/(.*)$", r"/moved/\1"))
    assert location(redirect) == b"http://example.com/moved/b?q=1"


def test_redirect_path_gets_a_leading_slash() -> None:
    assert location(Redirect(path="new")) == b"http://example.com/new?q=1"
    assert location(Redirect(prefix_rewrite="z"), target=b"/a") == b"http://example.com/z"


def test_https_redirect_with_everything() -> None:
    redirect = Redirect(scheme="https", host="secure.example.com", port=8443, path="/login", strip_query=True)
    assert location(redirect, authority=b"example.com:80") == b"https://secure.example.com:8443/login"
