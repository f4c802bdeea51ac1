"""The route table: one RouteConfiguration compiled for the per-request lookup.

Owns virtual-host selection by authority and first-match route selection. Everything is
compiled in ``RouteTable.__init__`` (or, one route per step, by ``RouteTable.build``, for a
caller that must not hold its event loop for a whole large table); ``route()`` only slices
bytes, probes dicts and calls precompiled closures, and returns a ``RouteDecision``
(``decision.py``) built at construction (no allocation per request when no header or query
matcher is involved). The one thing that changes after construction is a bounded memo of
authority -> virtual host.
Must not import asyncio, sockets or protobuf.

Virtual host selection (Envoy's ``VirtualHost.domains`` search order): exact domain, then
suffix wildcards ``*.foo.com`` / ``*-bar.foo.com`` (longest suffix first), then prefix
wildcards ``foo.*`` (longest prefix first), then ``*``. A wildcard matches at least one
character. Wildcards are dicts keyed by the literal part plus the distinct lengths, longest
first, so a lookup costs one slice and one probe per distinct wildcard length.

Ports: the lower-cased authority is tried as sent (so a domain ``foo:8080`` can be
configured, as Istio generates), then, if it carries a ``:port``, again without it (so a
plain ``foo`` domain serves ``foo:8080``, like Envoy's ``strip_any_host_port``); ``*`` is
tried only after both, else it would shadow the second attempt. Envoy rejects duplicate
domains; the compiler is expected to as well, and here the first virtual host listing a
domain keeps it.

Route paths are matched against the path part of the target (before ``?`` or ``#``). Note
that Envoy matches ``prefix`` against the whole ``:path`` including the query, so a prefix
containing ``?`` never matches here.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

from meshproxy.config.model import Route, RouteConfiguration, VirtualHost
from meshproxy.router.decision import RouteDecision, build_decision
from meshproxy.router.match import (
    IndexPredicate,
    compile_header_matcher,
    compile_query_matcher,
    header_index,
    query_params,
    split_target,
    strip_port,
)

__all__ = ["CompiledVirtualHost", "RouteDecision", "RouteTable"]

# Path match kinds, most common first in ``RouteTable.route``'s branch chain.
_PREFIX, _ANY, _EXACT, _SEPARATED, _PREFIX_NOCASE, _EXACT_NOCASE, _SEPARATED_NOCASE, _REGEX = range(8)
_SLASH = 0x2F
_MEMO_LIMIT = 1024


class CompiledRoute:
    """One route's match in bytes, and its precomputed decision."""

    __slots__ = ("decision", "headers", "kind", "pattern", "queries", "size", "value")

    def __init__(self, route: Route, decision: RouteDecision) -> None:
        m = route.match
        value = m.path.encode()
        if m.path_kind == "regex":
            assert m.pattern is not None, "the compiler compiles every regex route"
            kind = _REGEX
        elif m.path_kind == "path":
            kind = _EXACT if m.case_sensitive else _EXACT_NOCASE
        elif m.path_kind == "separated_prefix":
            kind = _SEPARATED if m.case_sensitive else _SEPARATED_NOCASE
        elif not value:
            kind = _ANY
        else:
            kind = _PREFIX if m.case_sensitive else _PREFIX_NOCASE
        self.kind = kind
        self.value = value if m.case_sensitive else value.lower()
        self.size = len(value)
        self.pattern = m.pattern
        self.headers = _all([compile_header_matcher(h) for h in m.headers])
        self.queries = _all([compile_query_matcher(q) for q in m.query_parameters])
        self.decision = decision


def _all(predicates: list[IndexPredicate]) -> IndexPredicate | None:
    """One predicate for a route's matchers (all must hold), or None when there are none."""
    if not predicates:
        return None
    if len(predicates) == 1:
        return predicates[0]

    def every(index: dict[bytes, bytes]) -> bool:
        return all(predicate(index) for predicate in predicates)

    return every


class CompiledVirtualHost:
    """A virtual host's routes, compiled, and the decision for "no route matched"."""

    __slots__ = ("header_names", "no_route", "routes", "vhost")

    def __init__(
        self, vhost: VirtualHost, config: RouteConfiguration, routes: tuple[CompiledRoute, ...] | None = None
    ) -> None:
        """``routes``: ``vhost.routes`` already compiled (``RouteTable.build``), else compiled here."""
        self.vhost = vhost
        self.no_route = RouteDecision(vhost, None)
        if routes is None:
            routes = tuple(CompiledRoute(r, build_decision(config, vhost, r)) for r in vhost.routes)
        self.routes = routes
        # Only these headers are indexed for matching, and only when a route needs them.
        self.header_names = frozenset(h.name.encode() for r in vhost.routes for h in r.match.headers)


class RouteTable:
    """A RouteConfiguration compiled for lookup; immutable once built, but for its memo."""

    __slots__ = (
        "_default",
        "_exact",
        "_memo",
        "_prefix_lens",
        "_prefixes",
        "_suffix_lens",
        "_suffixes",
        "_wild",
        "config",
    )

    def __init__(
        self, config: RouteConfiguration, virtual_hosts: Sequence[CompiledVirtualHost] | None = None
    ) -> None:
        """``virtual_hosts``: ``config.virtual_hosts`` already compiled, in order (``build``)."""
        self.config = config
        self._exact: dict[bytes, CompiledVirtualHost] = {}
        self._suffixes: dict[bytes, CompiledVirtualHost] = {}
        self._prefixes: dict[bytes, CompiledVirtualHost] = {}
        self._default: CompiledVirtualHost | None = None
        if virtual_hosts is None:
            virtual_hosts = [CompiledVirtualHost(vhost, config) for vhost in config.virtual_hosts]
        for compiled in virtual_hosts:
            for domain in compiled.vhost.domains:
                d = domain.lower().encode()
                # Envoy's classification: "*" alone, a leading "*", a trailing "*", else exact.
                if d == b"*":
                    if self._default is None:
                        self._default = compiled
                elif len(d) > 1 and d[0] == 0x2A:
                    self._suffixes.setdefault(d[1:], compiled)
                elif len(d) > 1 and d[-1] == 0x2A:
                    self._prefixes.setdefault(d[:-1], compiled)
                else:
                    self._exact.setdefault(d, compiled)
        self._suffix_lens = tuple(sorted({len(s) for s in self._suffixes}, reverse=True))
        self._prefix_lens = tuple(sorted({len(p) for p in self._prefixes}, reverse=True))
        self._wild = bool(self._suffixes or self._prefixes)
        # Authority as received -> selection. Hosts repeat (a sidecar talks to few services),
        # so most requests pay one dict probe. The Host header is the client's to choose,
        # hence the bound; past it, selection simply runs every time.
        self._memo: dict[bytes, CompiledVirtualHost | None] = {}

    @classmethod
    def build(cls, config: RouteConfiguration) -> Generator[None, None, RouteTable]:
        """``RouteTable(config)`` one route per step: yields after each route (10-20 us each)
        and returns the table."""
        hosts = []
        for vhost in config.virtual_hosts:
            routes = []
            for r in vhost.routes:
                routes.append(CompiledRoute(r, build_decision(config, vhost, r)))
                yield
            hosts.append(CompiledVirtualHost(vhost, config, tuple(routes)))
        return cls(config, hosts)

    def _wildcard(self, host: bytes) -> CompiledVirtualHost | None:
        n = len(host)
        for size in self._suffix_lens:
            # "< n": the wildcard must stand for at least one character.
            if size < n:
                found = self._suffixes.get(host[n - size :])
                if found is not None:
                    return found
        for size in self._prefix_lens:
            if size < n:
                found = self._prefixes.get(host[:size])
                if found is not None:
                    return found
        return None

    def find_virtual_host(self, authority: bytes) -> CompiledVirtualHost | None:
        memo = self._memo
        if authority in memo:
            return memo[authority]
        found = self._select(authority.lower())
        if len(memo) < _MEMO_LIMIT:
            memo[authority] = found
        return found

    def _select(self, host: bytes) -> CompiledVirtualHost | None:
        found = self._exact.get(host)
        if found is not None:
            return found
        if self._wild:
            found = self._wildcard(host)
            if found is not None:
                return found
        bare = strip_port(host)
        if bare is not host:
            found = self._exact.get(bare)
            if found is None and self._wild:
                found = self._wildcard(bare)
            if found is not None:
                return found
        return self._default

    def route(
        self, authority: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]]
    ) -> RouteDecision | None:
        """The decision for one request; None when no virtual host matches the authority."""
        memo = self._memo
        vhost = memo[authority] if authority in memo else self.find_virtual_host(authority)
        if vhost is None:
            return None
        # The path ends at "?" or "#" (split_target, inlined: this is the hot path).
        # (``0x23 in`` tests one byte several times faster than ``b"#" in``.)
        path = target.partition(b"?")[0]
        if 0x23 in path:
            path = path.partition(b"#")[0]
        lower: bytes | None = None
        index: dict[bytes, bytes] | None = None
        params: dict[bytes, bytes] | None = None
        for r in vhost.routes:
            kind = r.kind
            if kind == _PREFIX:
                if not path.startswith(r.value):
                    continue
            elif kind == _ANY:
                pass
            elif kind == _EXACT:
                if path != r.value:
                    continue
            elif kind == _SEPARATED:
                # Envoy's path_separated_prefix: the prefix, then the end of the path or "/".
                if not path.startswith(r.value) or (len(path) != r.size and path[r.size] != _SLASH):
                    continue
            elif kind == _REGEX:
                if r.pattern is None or not r.pattern.fullmatch(path):
                    continue
            else:
                if lower is None:
                    lower = path.lower()
                if kind == _PREFIX_NOCASE:
                    if not lower.startswith(r.value):
                        continue
                elif kind == _EXACT_NOCASE:
                    if lower != r.value:
                        continue
                elif not lower.startswith(r.value) or (len(lower) != r.size and lower[r.size] != _SLASH):
                    continue
            if r.headers is not None:
                if index is None:
                    index = header_index(headers, vhost.header_names, authority, target)
                if not r.headers(index):
                    continue
            if r.queries is not None:
                if params is None:
                    params = query_params(split_target(target)[1])
                if not r.queries(params):
                    continue
            return r.decision
        return vhost.no_route
