"""The envoy.filters.http.rbac filter's runtime: each request's facts checked against the rules.

Owns the HTTP side of RBAC (the rules are ``meshproxy/rbac/``'s): building the request's
``Facts`` from the stream and its connection (the path after normalisation, the pseudo-headers,
the peer, the x-forwarded-for the connection manager trusts, the TLS handshake), the per-route
``RBACPerRoute`` (its rules replace the filter's, counted under the filter's namespaces, as in
Envoy; without rules it turns the filter off for the route), and the refusal: Envoy's ``403``
with body ``RBAC: access denied``. A request hook only (``hcm/filters.py``). The local address
is looked up only when a rule reads it. Must not import asyncio, sockets or either codec package.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from meshproxy.addresses import address_of
from meshproxy.hcm.filters import Hooks, route_config
from meshproxy.hcm.reply import LocalReply
from meshproxy.rbac.engine import Facts, reads_destination
from meshproxy.rbac.runtime import RbacRuntime

if TYPE_CHECKING:
    from meshproxy.hcm.context import HttpContext
    from meshproxy.hcm.exchange import Exchange
    from meshproxy.hcm.filters import FilterStream
    from meshproxy.rbac.model import RbacFilter

DENIED = LocalReply(403, b"RBAC: access denied", "-")
# Per-route runtimes kept per filter; an RDS update that replaces routes brings new configs,
# so the cache is dropped whole past this many rather than growing without bound.
_MAX_ROUTE_RUNTIMES = 4096


class HttpRbac:
    __slots__ = ("config", "ctx", "local", "name", "routes", "runtime", "scope", "trust_xff")

    def __init__(self, config: RbacFilter, name: str, ctx: HttpContext) -> None:
        self.config = config
        self.name = name
        self.ctx = ctx
        self.scope = f"http.{ctx.config.stat_prefix}."
        self.runtime = RbacRuntime.counted(config, ctx.store, self.scope)
        # Envoy: without use_remote_address the client is x-forwarded-for's last address.
        self.trust_xff = not ctx.config.use_remote_address
        self.local = reads_destination(config.rules) or reads_destination(config.shadow_rules)
        self.routes: dict[int, tuple[RbacFilter, RbacRuntime, bool]] = {}

    def request(self, stream: FilterStream, x: Exchange, now: float) -> LocalReply | None:
        runtime, local = self.runtime, self.local
        override = route_config(x, self.name)
        if override is not None:
            runtime, local = self._for_route(override)
        conn = stream.conn
        host, port = (
            ("", 0)
            if not local
            else conn.original_dst or address_of(conn.transport.get_extra_info("sockname"))
        )
        facts = Facts(
            peer=conn.peer_ip.decode("latin-1"),
            local=host,
            local_port=port,
            tls=conn.tls,
            xff=stream.xff if self.trust_xff else None,
            headers=stream.headers,
            method=stream.method,
            target=stream.url,
            authority=stream.authority or b"",
            scheme=self.ctx.scheme,
        )
        return None if runtime.check(facts) is None else DENIED

    def _for_route(self, override: RbacFilter) -> tuple[RbacRuntime, bool]:
        """The route's rules, counted as the filter's (built once per route config)."""
        cached = self.routes.get(id(override))
        if cached is None or cached[0] is not override:
            if len(self.routes) >= _MAX_ROUTE_RUNTIMES:
                self.routes.clear()
            config = self.config
            counted_as_filter = replace(
                override, stat_prefix=config.stat_prefix, shadow_stat_prefix=config.shadow_stat_prefix
            )
            runtime = RbacRuntime.counted(counted_as_filter, self.ctx.store, self.scope)
            local = reads_destination(override.rules) or reads_destination(override.shadow_rules)
            cached = self.routes[id(override)] = (override, runtime, local)
        return cached[1], cached[2]


def http_rbac(config: RbacFilter, name: str, ctx: HttpContext, now: float) -> Hooks | None:
    """The factory (``hcm/chain.py``)."""
    return Hooks(name, request=HttpRbac(config, name, ctx).request)
