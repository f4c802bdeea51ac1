"""``/stats/prometheus``: the text exposition of a scrape, with prometheus-client loaded by it.

Owns where the proxy reaches prometheus-client's registry and text format. Importing the
package pulls in ``http.server``, ``wsgiref``, ``email`` and the rest of its exposition
servers: about 4.3 MiB resident (docs/memory.md), which a sidecar nobody scrapes should not
hold. So the collectors (``stats.py``, ``overload/stats.py``, ``tls/inventory.py``,
``telemetry/istio.py``) import their metric families inside ``collect``, and this module
imports the registry on the first scrape; once loaded, a scrape costs what it did.
Must not depend on the proxy's runtime.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


class Collector(Protocol):
    """What prometheus-client's registry calls at scrape time."""

    def collect(self) -> Iterable[Metric]: ...


def exposition(collectors: Iterable[Collector]) -> tuple[int, bytes, bytes]:
    """The admin answer to a scrape: status, the text format of every collector, its type."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return 200, generate_latest(registry), CONTENT_TYPE_LATEST.encode()
