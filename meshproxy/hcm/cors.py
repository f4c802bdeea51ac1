"""The envoy.filters.http.cors filter's runtime: preflights answered, responses annotated, sans-I/O.

Owns Envoy's CorsFilter rules for one request with a policy (the most specific
typed_per_filter_config entry for the filter: route, then virtual host, whole; Envoy takes each
attribute from the most specific policy that sets it, a departure named here): no ``Origin``,
nothing; filter_enabled and shadow_enabled drawn from the context's ``rng``; an origin that no
allow_origin_string_match matches (a matcher that matches ``*`` allows all) counts
``cors_origin_invalid`` and changes nothing; a valid one counts ``cors_origin_valid`` (shadow
mode stops there). A valid preflight (OPTIONS with ``Access-Control-Request-Method``) is answered
200 by the proxy with the allow-* headers; any other request goes on, and its response (upstream
or local) gains access-control-allow-origin, -allow-credentials and -expose-headers. Must not
import asyncio, sockets or either codec package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy.hcm.filters import Hooks, route_config
from meshproxy.hcm.reply import LocalReply
from meshproxy.router.match import compile_string_match

if TYPE_CHECKING:
    from meshproxy.config.filter_config import CorsFilter, CorsPolicy, Percent
    from meshproxy.hcm.context import HttpContext
    from meshproxy.hcm.exchange import Exchange
    from meshproxy.hcm.filters import FilterStream
    from meshproxy.router.match import BytesPredicate

ORIGIN = b"origin"
REQUEST_METHOD = b"access-control-request-method"
REQUEST_PRIVATE_NETWORK = b"access-control-request-private-network"
ALLOW_ORIGIN = b"access-control-allow-origin"
ALLOW_CREDENTIALS = (b"access-control-allow-credentials", b"true")


class Cors:
    __slots__ = ("ctx", "matchers", "name")

    def __init__(self, name: str, ctx: HttpContext) -> None:
        self.name = name
        self.ctx = ctx
        # Origin matchers per policy, compiled on first use; bounded by this snapshot's policies.
        self.matchers: dict[CorsPolicy, list[BytesPredicate]] = {}

    def request(self, stream: FilterStream, x: Exchange, now: float) -> LocalReply | None:
        policy: CorsPolicy | None = route_config(x, self.name)
        if policy is None:
            return None
        headers = stream.headers
        origin = _header(headers, ORIGIN)
        if origin is None:
            return None
        enabled = self._drawn(policy.enabled)
        if not enabled and not self._drawn(policy.shadow):
            return None
        stats = self.ctx.stats
        if not self._allowed(policy, origin):
            stats.cors_origin_invalid += 1
            return None
        stats.cors_origin_valid += 1
        if not enabled:
            return None
        if stream.method == b"OPTIONS" and _header(headers, REQUEST_METHOD):
            return _preflight(policy, origin, _header(headers, REQUEST_PRIVATE_NETWORK) == b"true")
        state = x.filter_state
        if state is None:
            state = x.filter_state = {}
        state[self.name] = (policy, origin)
        return None

    def response(self, x: Exchange, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        state = x.filter_state
        entry = state.get(self.name) if state is not None else None
        if entry is None:
            return
        policy, origin = entry
        headers.append((ALLOW_ORIGIN, origin))
        if policy.allow_credentials:
            headers.append(ALLOW_CREDENTIALS)
        if policy.expose_headers:
            headers.append((b"access-control-expose-headers", policy.expose_headers.encode()))

    def _drawn(self, percent: Percent) -> bool:
        return self.ctx.rng.random() * percent.denominator < percent.numerator

    def _allowed(self, policy: CorsPolicy, origin: bytes) -> bool:
        tests = self.matchers.get(policy)
        if tests is None:
            tests = self.matchers[policy] = [compile_string_match(m) for m in policy.allow_origins]
        return any(test(b"*") or test(origin) for test in tests)


def _preflight(policy: CorsPolicy, origin: bytes, private_network: bool) -> LocalReply:
    extra = [(ALLOW_ORIGIN, origin)]
    if policy.allow_credentials:
        extra.append(ALLOW_CREDENTIALS)
    for name, value in (
        (b"access-control-allow-methods", policy.allow_methods),
        (b"access-control-allow-headers", policy.allow_headers),
        (b"access-control-max-age", policy.max_age),
    ):
        if value:
            extra.append((name, value.encode()))
    if private_network and policy.allow_private_network_access:
        extra.append((b"access-control-allow-private-network", b"true"))
    return LocalReply(200, b"", "-", tuple(extra))


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((v for n, v in headers if n == name), None)


def cors(config: CorsFilter, name: str, ctx: HttpContext, now: float) -> Hooks:
    """The factory (``hcm/chain.py``)."""
    f = Cors(name, ctx)
    return Hooks(name, request=f.request, response=f.response)
