"""One configured RBAC filter at run time: its compiled engines and its counters, sans-I/O.

Owns the filter-level rules both RBAC filters share (Envoy's ``rbac_filter.cc`` for HTTP and
network): the shadow rules are evaluated first and only counted (``shadow_allowed`` /
``shadow_denied``: a dry run never refuses anything); then the enforced rules decide
(``allowed`` / ``denied``). A filter with neither lets everything through uncounted (the
per-route ``RBACPerRoute`` without ``rbac``, which turns the filter off for a route). Built once
per configuration (the listener's, or a route table's), so engines are compiled once; the
counters are the Store's, kept by namespace across configuration swaps.
Must not import asyncio, sockets or protobuf; the filters that call it own the I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy.rbac.engine import Engine, Facts

if TYPE_CHECKING:
    from meshproxy.rbac.model import RbacFilter
    from meshproxy.stats import RbacStats, Store


class RbacRuntime:
    """``check(facts)``: None to let the request (connection) through, else the reason it is
    refused, Envoy's ``rbac_access_denied_matched_policy[<policy or none>]``."""

    __slots__ = ("engine", "shadow", "shadow_stats", "stats")

    def __init__(self, config: RbacFilter, stats: RbacStats | None, shadow_stats: RbacStats | None) -> None:
        self.engine = Engine(config.rules) if config.rules is not None else None
        self.shadow = Engine(config.shadow_rules) if config.shadow_rules is not None else None
        self.stats = stats
        self.shadow_stats = shadow_stats

    @classmethod
    def counted(cls, config: RbacFilter, store: Store, scope: str = "") -> RbacRuntime:
        """Counted in ``store`` under the config's namespaces, which are relative to ``scope``
        (the HTTP filter's, ``http.<stat_prefix>.``); only the rules present are counted."""
        stats = store.rbac_stats(scope + config.stat_prefix) if config.rules is not None else None
        shadow = (
            store.rbac_stats(scope + config.shadow_stat_prefix) if config.shadow_rules is not None else None
        )
        return cls(config, stats, shadow)

    def check(self, facts: Facts) -> str | None:
        shadow = self.shadow
        if shadow is not None:
            allowed, _ = shadow.allows(facts)
            stats = self.shadow_stats
            assert stats is not None
            if allowed:
                stats.shadow_allowed += 1
            else:
                stats.shadow_denied += 1
        engine = self.engine
        if engine is None:
            return None
        allowed, policy = engine.allows(facts)
        stats = self.stats
        assert stats is not None
        if allowed:
            stats.allowed += 1
            return None
        stats.denied += 1
        return f"rbac_access_denied_matched_policy[{policy or 'none'}]"
