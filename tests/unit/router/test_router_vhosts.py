"""Virtual host selection by authority: Envoy's domain search order, ports, case, ties."""

from __future__ import annotations

import pytest

from meshproxy.config.model import Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost
from meshproxy.router.table import RouteTable

_ROUTE = Route(RouteMatch("prefix", "/"), RouteAction(cluster="c"))


def table(*vhosts: tuple[str, tuple[str, ...]]) -> RouteTable:
    return RouteTable(
        RouteConfiguration("rc", tuple(VirtualHost(name, domains, (_ROUTE,)) for name, domains in vhosts))
    )


def picked(t: RouteTable, authority: bytes) -> str | None:
    found = t.find_virtual_host(authority)
    return None if found is None else found.vhost.name


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        (b"api.foo.com", "exact"),
        (b"web.foo.com", "suffix"),
        (b"a.bar.foo.com", "longer-suffix"),
        (b"baz-bar.foo.com", "dash-suffix"),
        (b"foo.org", "prefix"),
        (b"foo.bar.org", "longer-prefix"),
        (b"elsewhere", "default"),
    ],
)
def test_search_order_and_longest_wildcard(authority: bytes, expected: str) -> None:
    t = table(
        ("default", ("*",)),
        ("prefix", ("foo.*",)),
        ("longer-prefix", ("foo.bar.*",)),
        ("suffix", ("*.foo.com",)),
        ("longer-suffix", ("*.bar.foo.com",)),
        ("dash-suffix", ("*-bar.foo.com",)),
        ("exact", ("api.foo.com",)),
    )
    assert picked(t, authority) == expected


def test_suffix_wildcard_beats_prefix_wildcard() -> None:
    t = table(("prefix", ("foo.*",)), ("suffix", ("*.com",)))
    assert picked(t, b"foo.com") == "suffix"


@pytest.mark.parametrize(
    ("domain", "authority"),
    [
        ("*.foo.com", b"foo.com"),
        ("*.foo.com", b".foo.com"),
        ("*-bar.foo.com", b"-bar.foo.com"),
        ("foo.*", b"foo."),
    ],
)
def test_wildcard_matches_at_least_one_character(domain: str, authority: bytes) -> None:
    assert picked(table(("w", (domain,))), authority) is None


def test_no_default_means_no_virtual_host() -> None:
    t = table(("only", ("foo.com",)))
    assert picked(t, b"bar.com") is None
    assert t.route(b"bar.com", b"/", []) is None


def test_authority_is_case_insensitive_and_domains_too() -> None:
    t = table(("v", ("API.Foo.com",)))
    assert picked(t, b"api.FOO.com") == "v"


def test_full_authority_is_tried_before_the_port_is_stripped() -> None:
    t = table(("plain", ("foo.com",)), ("with-port", ("foo.com:8080",)), ("default", ("*",)))
    assert picked(t, b"foo.com:8080") == "with-port"
    assert picked(t, b"foo.com:9090") == "plain"
    assert picked(t, b"foo.com") == "plain"


def test_stripped_authority_is_searched_before_the_default() -> None:
    t = table(("default", ("*",)), ("suffix", ("*.foo.com",)))
    assert picked(t, b"a.foo.com:443") == "suffix"


def test_a_wildcard_on_the_full_authority_wins_over_an_exact_stripped_one() -> None:
    # The whole search runs on the authority as sent before it runs on the bare host.
    t = table(("plain", ("foo.com",)), ("prefix", ("foo.*",)))
    assert picked(t, b"foo.com:8080") == "prefix"


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        (b"[::1]:8080", "v6"),
        (b"[::1]", "v6"),
        (b"foo.com:", None),
        (b"foo.com:http", None),
    ],
)
def test_port_stripping_needs_a_numeric_port(authority: bytes, expected: str | None) -> None:
    t = table(("v6", ("[::1]",)), ("plain", ("foo.com",)))
    assert picked(t, authority) == expected


def test_first_virtual_host_listing_a_domain_keeps_it() -> None:
    t = table(("first", ("foo.com", "*.x", "*")), ("second", ("foo.com", "*.x", "*")))
    assert picked(t, b"foo.com") == "first"
    assert picked(t, b"a.x") == "first"
    assert picked(t, b"other") == "first"


def test_memo_is_bounded_and_does_not_change_answers() -> None:
    t = table(("suffix", ("*.foo.com",)), ("default", ("*",)))
    for i in range(3000):
        assert picked(t, b"h%d.foo.com" % i) == "suffix"
        assert picked(t, b"h%d.bar.com" % i) == "default"
    assert len(t._memo) <= 1024
    assert picked(t, b"h2999.foo.com") == "suffix"
