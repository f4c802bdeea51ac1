"""Compiles Envoy's ``upgrade_configs``: the HTTP connection manager's list and a route's.

Owns what meshproxy accepts of them: an upgrade type (compared case-insensitively, stored
lower-case) with ``enabled`` (default true), at most once per list. Refused with the field
path: an empty ``upgrade_type``; a duplicate; the HCM's per-upgrade ``filters`` (upgrades run
the listener's filters); ``h2c`` (never tunnelled: an ``Upgrade: h2c`` request goes on as plain
HTTP/1.1, issue 12 finding 2); an enabled ``CONNECT`` and a route's ``connect_config``
(meshproxy does not tunnel CONNECT; it answers CONNECT with 405). ``hcm/upgrade.py`` applies
the result per request.
Must not import the request path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from meshproxy.config.compile_common import Ctx, wrapped


class _UpgradeConfig(Protocol):
    """The fields both UpgradeConfig messages (HCM and RouteAction) have."""

    upgrade_type: str

    def HasField(self, name: str) -> bool: ...  # protobuf's name


def upgrade_configs(
    items: Iterable[_UpgradeConfig], ctx: Ctx, *, route: bool
) -> tuple[tuple[str, bool], ...]:
    """(lower-case upgrade type, enabled) per entry, in order; ``route``: RouteAction's list."""
    out: dict[str, bool] = {}
    for item, c in ctx.each("upgrade_configs", items):
        kind = item.upgrade_type.strip().lower()
        enabled: bool = wrapped(item, "enabled", True)
        if not kind:
            c.at("upgrade_type").problem("is required")
            continue
        if kind in out:
            c.at("upgrade_type").problem(f"{item.upgrade_type!r} is configured twice")
        if kind == "h2c":
            c.at("upgrade_type").problem(
                "h2c is not supported: an Upgrade: h2c request is sent on as plain HTTP/1.1, never tunnelled"
            )
        elif kind == "connect" and enabled:
            c.at("upgrade_type").problem(
                "CONNECT tunnelling is not supported (CONNECT is answered 405);"
                " leave it out or set enabled: false"
            )
        if route and item.HasField("connect_config"):
            c.at("connect_config").problem("is not supported; meshproxy does not tunnel CONNECT")
        if not route and list(getattr(item, "filters", ())):
            c.at("filters").problem("is not supported; an upgraded stream runs the listener's http_filters")
        out[kind] = enabled
    return tuple(out.items())
