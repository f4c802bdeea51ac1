"""Whether an HTTP/1.1 ``Upgrade`` request is carried out: Envoy's ``upgrade_configs``.

Owns the decision, for every codec that can carry an upgrade (HTTP/1.1 today; meshproxy's
HTTP/2 listener does not offer RFC 8441 extended CONNECT, so an HTTP/2 CONNECT is refused
before routing). Envoy's rules (``ConnectionManagerImpl::ActiveStream::decodeHeaders`` and
``createUpgradeFilterChain``), applied once a route matched:

1. The upgrade type is the ``Upgrade`` header's value, compared case-insensitively.
2. A route's ``upgrade_configs`` entry with ``enabled: false`` refuses the type on that route.
3. Otherwise the type is allowed when the route's entry enables it (whether or not the HCM
   lists it: Envoy's own websocket example enables upgrades on the route alone), or when the
   HCM's ``upgrade_configs`` lists it enabled; a type neither enables is refused.
4. A refused upgrade is answered ``403`` with an empty body (Envoy's response code details
   ``upgrade_failed``), counted as ``downstream_rq_ws_on_non_ws_route``, and the connection is
   closed after it (what follows the head may be upgrade payload, not HTTP).

``h2c`` never reaches here (the HTTP/1.1 codec sends it on as a plain request) and ``CONNECT``
is refused by the codecs (405); the compiler refuses configurations enabling either.
Must not import the codecs or asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy.config.model import RouteAction
from meshproxy.hcm.context import LocalReply

if TYPE_CHECKING:
    from meshproxy.config.model import Route
    from meshproxy.hcm.context import HttpContext

UPGRADE_REFUSED = LocalReply(403, b"", "-")


def upgrade_allowed(
    kind: bytes, hcm: tuple[tuple[str, bool], ...], route: tuple[tuple[str, bool], ...]
) -> bool:
    """Rules 1 to 3; the lists are (lower-case type, enabled) pairs, each a handful long."""
    name = kind.strip().lower().decode("latin-1")
    on_route = next((enabled for t, enabled in route if t == name), None)
    if on_route is False:
        return False
    return on_route is True or any(enabled for t, enabled in hcm if t == name)


def upgrade_refusal(ctx: HttpContext, route: Route | None, kind: bytes) -> LocalReply | None:
    """Rule 4 for a request asking to upgrade to ``kind`` that matched ``route``: the reply
    refusing it, counted, or None when the upgrade goes ahead."""
    action = route.action if route is not None else None
    per_route = action.upgrades if type(action) is RouteAction else ()
    if upgrade_allowed(kind, ctx.config.upgrades, per_route):
        return None
    ctx.stats.downstream_rq_ws_on_non_ws_route += 1
    return UPGRADE_REFUSED
