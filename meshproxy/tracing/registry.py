"""The server's tracers: one exporter per tracing configuration, a tracer per filter chain.

Owns ``Tracers``: every ``Exporter`` (``export.py``) by its ``Tracing`` configuration, shared by
the filter chains that name it and kept across configuration swaps (a configuration no longer
named keeps an idle exporter: one sleeping task, bounded by the configurations ever applied),
and the ``Tracer`` each chain's ``HttpContext`` holds. Must not import grpc at module level:
a proxy that traces nothing never loads grpc or the OTLP messages.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from meshproxy.tracing.tracer import Tracer

if TYPE_CHECKING:
    from meshproxy.config.model import Tracing
    from meshproxy.stats import Store
    from meshproxy.tracing.export import Exporter
    from meshproxy.upstream.manager import ClusterManager


class Tracers:
    def __init__(self, store: Store, clusters: ClusterManager, rng: random.Random) -> None:
        self._store = store
        self._clusters = clusters
        self._rng = rng
        self._exporters: dict[Tracing, Exporter] = {}

    def tracer(self, config: Tracing, outbound: bool) -> Tracer:
        """A chain's tracer (its spans are CLIENT spans when ``outbound``); needs a running loop."""
        exporter = self._exporters.get(config)
        if exporter is None:
            # Loaded with the first traced chain: grpc and the OTLP messages cost ~100 ms of
            # start-up that a proxy without tracing should not pay.
            from meshproxy.tracing.export import Exporter

            stats = self._store.tracing_stats(config.collector)
            exporter = self._exporters[config] = Exporter(config, self._clusters, stats)
        return Tracer(config, outbound, exporter.queue, self._rng, time.time() - time.monotonic())

    async def close(self) -> None:
        for exporter in self._exporters.values():
            await exporter.close()
        self._exporters.clear()
