"""RouteTable agrees with a plain linear-scan reference on random configurations and requests.

The reference below is written from Envoy's documented rules, as directly as possible: it
scans every domain of every virtual host and every route in order, on ``str``, with no
precompilation. Small alphabets make collisions (ties, shared prefixes, ports, wildcards that
would match the empty string) common.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from meshproxy.config.model import (
    HeaderMatcher,
    QueryParameterMatcher,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    StringMatch,
    VirtualHost,
)
from meshproxy.config.regex import compile_regex
from meshproxy.router.table import RouteTable

# --------------------------------------------------------------------------- the reference


def ref_string_match(sm: StringMatch, value: str) -> bool:
    if sm.kind == "regex":
        return re.fullmatch(sm.value, value) is not None
    want = sm.value
    if sm.ignore_case:
        want, value = want.lower(), value.lower()
    if sm.kind == "exact":
        return value == want
    if sm.kind == "prefix":
        return value.startswith(want)
    if sm.kind == "suffix":
        return value.endswith(want)
    return want in value


def ref_select(config: RouteConfiguration, host: str) -> VirtualHost | None:
    # Exact first; then the longest matching suffix wildcard; then the longest prefix one.
    for vh in config.virtual_hosts:
        for d in vh.domains:
            if d != "*" and not d.startswith("*") and not d.endswith("*") and d.lower() == host:
                return vh
    best, best_len = None, -1
    for vh in config.virtual_hosts:
        for d in vh.domains:
            if len(d) > 1 and d.startswith("*"):
                suffix = d[1:].lower()
                if host.endswith(suffix) and len(host) > len(suffix) and len(suffix) > best_len:
                    best, best_len = vh, len(suffix)
    if best is not None:
        return best
    for vh in config.virtual_hosts:
        for d in vh.domains:
            if len(d) > 1 and d.endswith("*") and not d.startswith("*"):
                prefix = d[:-1].lower()
                if host.startswith(prefix) and len(host) > len(prefix) and len(prefix) > best_len:
                    best, best_len = vh, len(prefix)
    return best


def ref_virtual_host(config: RouteConfiguration, authority: str) -> VirtualHost | None:
    host = authority.lower()
    found = ref_select(config, host)
    if found is None:
        m = re.fullmatch(r"(.*):([0-9]+)", host)
        if m is not None:
            found = ref_select(config, m.group(1))
    if found is None:
        for vh in config.virtual_hosts:
            if "*" in vh.domains:
                return vh
    return found


def ref_split(target: str) -> tuple[str, str]:
    for i, ch in enumerate(target):
        if ch == "#":
            return target[:i], ""
        if ch == "?":
            return target[:i], target[i + 1 :].split("#")[0]
    return target, ""


def ref_path_matches(m: RouteMatch, path: str) -> bool:
    if m.path_kind == "regex":
        return re.fullmatch(m.path, path) is not None
    want = m.path
    if not m.case_sensitive:
        want, path = want.lower(), path.lower()
    if m.path_kind == "prefix":
        return path.startswith(want)
    if m.path_kind == "path":
        return path == want
    return path == want or path.startswith(want + "/")


def ref_header_matches(hm: HeaderMatcher, headers: list[tuple[str, str]]) -> bool:
    values = [v for n, v in headers if n == hm.name]
    if not values and not hm.missing_as_empty:
        if hm.invert:
            return hm.match is None and hm.present
        return hm.match is None and not hm.present
    value = ",".join(values)
    result = hm.present if hm.match is None else ref_string_match(hm.match, value)
    return result != hm.invert


def ref_query_matches(qm: QueryParameterMatcher, query: str) -> bool:
    first: str | None = None
    if query:
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if name == qm.name:
                first = value
                break
    if qm.match is None:
        return (first is not None) == qm.present
    return first is not None and ref_string_match(qm.match, first)


def ref_route(vh: VirtualHost, target: str, headers: list[tuple[str, str]]) -> Route | None:
    path, query = ref_split(target)
    for r in vh.routes:
        if (
            ref_path_matches(r.match, path)
            and all(ref_header_matches(h, headers) for h in r.match.headers)
            and all(ref_query_matches(q, query) for q in r.match.query_parameters)
        ):
            return r
    return None


# --------------------------------------------------------------------------- strategies

LABELS = st.sampled_from(["a", "b", "ab", "ba", "A", "x-b"])
REGEXES = ["/a.*", "/[ab]+", ".*b", "/A/?", "(/a)*", "/a/[0-9]+"]
VALUE_REGEXES = ["a.*", "[ab,]*", ".*B", ""]


@st.composite
def domains(draw: st.DrawFn) -> str:
    name = ".".join(draw(st.lists(LABELS, min_size=1, max_size=3)))
    shape = draw(st.sampled_from(["exact", "suffix", "prefix", "star", "port"]))
    if shape == "suffix":
        return "*" + draw(st.sampled_from(["", ".", "-"])) + name
    if shape == "prefix":
        return name + draw(st.sampled_from(["", "."])) + "*"
    if shape == "star":
        return "*"
    if shape == "port":
        return name + ":" + draw(st.sampled_from(["80", "8080"]))
    return name


@st.composite
def string_matches(draw: st.DrawFn) -> StringMatch:
    kind = draw(st.sampled_from(["exact", "prefix", "suffix", "contains", "regex"]))
    if kind == "regex":
        source = draw(st.sampled_from(VALUE_REGEXES))
        return StringMatch("regex", source, pattern=compile_regex(source))
    value = draw(st.text(alphabet="aB,", max_size=2))
    return StringMatch(kind, value, ignore_case=draw(st.booleans()))


@st.composite
def header_matchers(draw: st.DrawFn) -> HeaderMatcher:
    return HeaderMatcher(
        name=draw(st.sampled_from(["x", "y"])),
        match=draw(st.none() | string_matches()),
        present=draw(st.booleans()),
        invert=draw(st.booleans()),
        missing_as_empty=draw(st.booleans()),
    )


@st.composite
def query_matchers(draw: st.DrawFn) -> QueryParameterMatcher:
    return QueryParameterMatcher(
        name=draw(st.sampled_from(["a", "b"])),
        match=draw(st.none() | string_matches()),
        present=draw(st.booleans()),
    )


@st.composite
def routes(draw: st.DrawFn) -> Route:
    kind = draw(st.sampled_from(["prefix", "path", "regex", "separated_prefix"]))
    if kind == "regex":
        path = draw(st.sampled_from(REGEXES))
        pattern = compile_regex(path)
    else:
        path = draw(st.sampled_from(["", "/", "/a", "/A", "/a/b", "/ab", "/b"]))
        pattern = None
    match = RouteMatch(
        path_kind=kind,
        path=path,
        case_sensitive=draw(st.booleans()),
        pattern=pattern,
        headers=tuple(draw(st.lists(header_matchers(), max_size=2))) if draw(st.booleans()) else (),
        query_parameters=tuple(draw(st.lists(query_matchers(), max_size=2))) if draw(st.booleans()) else (),
    )
    return Route(match, RouteAction(cluster="c"))


@st.composite
def configs(draw: st.DrawFn) -> RouteConfiguration:
    vhosts = draw(
        st.lists(
            st.tuples(
                st.lists(domains(), min_size=1, max_size=4), st.lists(routes(), min_size=1, max_size=5)
            ),
            min_size=1,
            max_size=5,
        )
    )
    return RouteConfiguration(
        "rc", tuple(VirtualHost(f"v{i}", tuple(d), tuple(r)) for i, (d, r) in enumerate(vhosts))
    )


@st.composite
def authorities(draw: st.DrawFn, config: RouteConfiguration) -> str:
    listed = [d for vh in config.virtual_hosts for d in vh.domains]
    base = draw(st.sampled_from(listed)) if draw(st.booleans()) else ""
    base = base.replace("*", draw(st.sampled_from(["", "a", "b.", "x-"])))
    if not base:
        base = ".".join(draw(st.lists(LABELS, min_size=1, max_size=3)))
    port = draw(st.sampled_from(["", "", ":80", ":8080", ":", ":x"]))
    return "".join(c.upper() if draw(st.booleans()) else c for c in base) + port


PARAMS = st.lists(
    st.tuples(
        st.sampled_from(["a", "a", "b", "ab", ""]),
        st.sampled_from(["=", "=", ""]),
        st.text("aB,", max_size=2),
    ),
    max_size=4,
)
STRUCTURED_TARGETS = st.builds(
    lambda path, params, query, fragment: (
        path + ("?" + "&".join(n + sep + v for n, sep, v in params) if query else "") + fragment
    ),
    st.builds(
        str.__add__,
        st.sampled_from(["", "/", "/a", "/A", "/a/b", "/ab", "/b", "/a/12"]),
        st.sampled_from(["", "", "/", "/b", "b", "/12", "B/"]),
    ),
    PARAMS,
    st.booleans(),
    st.sampled_from(["", "", "#", "#a?a=b", "#/"]),
)
TARGETS = st.one_of(st.text(alphabet="/abAB0?#=&", max_size=10), STRUCTURED_TARGETS, STRUCTURED_TARGETS)
HEADERS = st.lists(
    st.tuples(st.sampled_from(["x", "x", "y", "z"]), st.text(alphabet="aBb,", max_size=2)), max_size=4
)


# --------------------------------------------------------------------------- the property


@settings(max_examples=400, deadline=None)
@given(data=st.data(), config=configs())
def test_route_table_agrees_with_the_reference(data: st.DataObject, config: RouteConfiguration) -> None:
    table = RouteTable(config)
    for _ in range(8):
        authority = data.draw(authorities(config))
        target = data.draw(TARGETS)
        headers = data.draw(HEADERS)
        expected_vh = ref_virtual_host(config, authority)
        decision = table.route(
            authority.encode(), target.encode(), [(n.encode(), v.encode()) for n, v in headers]
        )
        if expected_vh is None:
            assert decision is None
            continue
        assert decision is not None
        assert decision.vhost is expected_vh
        assert decision.route is ref_route(expected_vh, target, headers)


@st.composite
def matcher_routes(draw: st.DrawFn) -> Route:
    match = RouteMatch(
        path_kind="prefix",
        path="",
        headers=tuple(draw(st.lists(header_matchers(), max_size=2))),
        query_parameters=tuple(draw(st.lists(query_matchers(), max_size=2))),
    )
    return Route(match, RouteAction(cluster="c"))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), vhost_routes=st.lists(matcher_routes(), min_size=1, max_size=3))
def test_header_and_query_matchers_agree_with_the_reference(
    data: st.DataObject, vhost_routes: list[Route]
) -> None:
    # Every route matches every path, so only the header and query matchers decide.
    vhost = VirtualHost("v", ("*",), tuple(vhost_routes))
    table = RouteTable(RouteConfiguration("rc", (vhost,)))
    for _ in range(8):
        params = data.draw(PARAMS)
        target = (
            "/?" + "&".join(n + sep + v for n, sep, v in params) + data.draw(st.sampled_from(["", "#a=B"]))
        )
        headers = data.draw(HEADERS)
        decision = table.route(b"h", target.encode(), [(n.encode(), v.encode()) for n, v in headers])
        assert decision is not None
        assert decision.route is ref_route(vhost, target, headers)
