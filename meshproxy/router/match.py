"""Request-side matchers, compiled once from the config model into closures over bytes.

Owns the semantics of Envoy's StringMatcher, HeaderMatcher and QueryParameterMatcher as the
router applies them, and the small byte helpers that split a request target and an
authority. Everything that can be decided from configuration (encodings, lower-casing, which
branch applies) is decided here at construction; a compiled matcher does one comparison per
request. Must not import asyncio, sockets or protobuf, and must not compile a regex on the
request path (patterns arrive compiled in the model).

Text encoding: configuration strings are encoded as UTF-8; request bytes are compared raw,
regexes included (RE2 matches bytes as UTF-8, as in Envoy). ``ignore_case`` is ASCII-only
(``bytes.lower``), as Envoy's absl comparisons are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from meshproxy.config.model import HeaderMatcher, QueryParameterMatcher, StringMatch

BytesPredicate = Callable[[bytes], bool]
# Header matchers take the request's header index, query matchers its parsed parameters.
IndexPredicate = Callable[[dict[bytes, bytes]], bool]


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """Split a request target into (path, query): the path ends at the first ``?`` or ``#``.

    Envoy strips query and fragment the same way before path matching
    (``Http::PathUtil::removeQueryAndFragment``); the query excludes any fragment.
    """
    path, _, query = target.partition(b"?")
    if 0x23 in path:
        return path.partition(b"#")[0], b""
    if 0x23 in query:
        query = query.partition(b"#")[0]
    return path, query


def strip_port(host: bytes) -> bytes:
    """``host`` without a trailing ``:port``; unchanged when there is no numeric port.

    Follows Envoy's ``HeaderUtility::getPortStart``: the last ``:`` starts the port unless a
    ``]`` follows it (a bracketed IPv6 literal without a port) -- then what follows it is not
    all digits, which is the one test made here.
    """
    i = host.rfind(b":")
    if i < 0 or not host[i + 1 :].isdigit():
        return host
    return host[:i]


def compile_string_match(sm: StringMatch) -> BytesPredicate:
    """envoy.type.matcher.v3.StringMatcher over bytes.

    ``safe_regex`` must match the whole value and ignores ``ignore_case`` (Envoy's docs: "This
    has no effect for the safe_regex match").
    """
    if sm.kind == "regex":
        assert sm.pattern is not None, "the compiler compiles every regex StringMatch"
        return sm.pattern.fullmatch
    want = sm.value.encode()
    kind = sm.kind
    if sm.ignore_case:
        want = want.lower()
        if kind == "exact":
            return lambda v: v.lower() == want
        if kind == "prefix":
            n = len(want)
            return lambda v: v[:n].lower() == want
        if kind == "suffix":
            n = len(want)
            return lambda v: len(v) >= n and v[len(v) - n :].lower() == want
        return lambda v: want in v.lower()
    if kind == "exact":
        return lambda v: v == want
    if kind == "prefix":
        return lambda v: v.startswith(want)
    if kind == "suffix":
        return lambda v: v.endswith(want)
    return lambda v: want in v


def compile_header_matcher(hm: HeaderMatcher) -> IndexPredicate:
    """One HeaderMatcher as a predicate over the request's header index (see ``header_index``).

    Mirrors Envoy's ``HeaderUtility::matchHeaders``: a missing header (unless
    ``missing_as_empty``) matches only a present_match that expects absence, or, inverted, a
    present_match that expects presence; every other matcher fails on a missing header
    whatever ``invert`` says. A header that is there (or treated as empty) is matched, then
    the result is inverted if asked.
    """
    name = hm.name.encode()
    invert = hm.invert
    if hm.match is None:
        present = hm.present
        if hm.missing_as_empty:
            # Treated as present-and-empty: presence is then the configured expectation.
            result = present != invert
            return lambda index: result
        when_present = present != invert
        when_missing = (not present) != invert
        return lambda index: when_present if name in index else when_missing
    test = compile_string_match(hm.match)
    if hm.missing_as_empty:
        return lambda index: test(index.get(name, b"")) != invert

    def matches(index: dict[bytes, bytes]) -> bool:
        value = index.get(name)
        return value is not None and test(value) != invert

    return matches


def header_index(
    headers: Sequence[tuple[bytes, bytes]], wanted: frozenset[bytes], authority: bytes, target: bytes
) -> dict[bytes, bytes]:
    """The values of the ``wanted`` headers, repeated ones joined with ``,`` as Envoy does.

    ``:authority`` and ``:path`` are answered from the request line and Host when the data
    plane did not pass them as headers (an HTTP/1.1 head has no pseudo-headers).
    """
    index: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in wanted:
            prev = index.get(name)
            index[name] = value if prev is None else prev + b"," + value
    if b":authority" in wanted and b":authority" not in index:
        index[b":authority"] = authority
    if b":path" in wanted and b":path" not in index:
        index[b":path"] = target
    return index


def compile_query_matcher(qm: QueryParameterMatcher) -> IndexPredicate:
    """One QueryParameterMatcher over the parsed query (see ``query_params``).

    Envoy (``ConfigUtility::QueryParameterMatcher::matches``) looks at the first value only; a
    present_match compares presence with the expectation (so ``present=False`` matches when
    the parameter is absent); a string match fails when the parameter is absent.
    """
    name = qm.name.encode()
    if qm.match is None:
        present = qm.present
        return lambda params: (name in params) == present
    test = compile_string_match(qm.match)

    def matches(params: dict[bytes, bytes]) -> bool:
        value = params.get(name)
        return value is not None and test(value)

    return matches


def query_params(query: bytes) -> dict[bytes, bytes]:
    """First value of each parameter, raw (not percent-decoded), as Envoy's route matching sees it.

    A parameter without ``=`` has the empty value.
    """
    params: dict[bytes, bytes] = {}
    if query:
        for part in query.split(b"&"):
            name, _, value = part.partition(b"=")
            params.setdefault(name, value)
    return params


HeadersPredicate = Callable[[Sequence[tuple[bytes, bytes]], bytes, bytes], bool]


def compile_headers_match(matchers: Sequence[HeaderMatcher]) -> HeadersPredicate:
    """All of ``matchers`` over a request's (headers, authority, target): what a filter's
    ``headers`` field asks (the route's own matching builds one index for all its routes)."""
    wanted = frozenset(m.name.encode() for m in matchers)
    tests = [compile_header_matcher(m) for m in matchers]

    def matches(headers: Sequence[tuple[bytes, bytes]], authority: bytes, target: bytes) -> bool:
        index = header_index(headers, wanted, authority, target)
        return all(test(index) for test in tests)

    return matches
