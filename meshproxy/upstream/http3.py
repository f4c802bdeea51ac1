"""The HTTP/3 pool of an HTTP/3 cluster's host, with aioquic loaded on first use.

Owns the one lazy import between the request path and ``meshproxy.quic``: a proxy without an
HTTP/3 cluster never loads aioquic (test_import_discipline.py), and the request-path packages
import nothing inside their functions (tests/unit/hcm/test_layering.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshproxy.upstream.breaker import ResourceManager
    from meshproxy.upstream.cluster import ClusterRuntime, Host


def h3_pool_for(cluster: ClusterRuntime, host: Host, resources: ResourceManager) -> Any:
    from meshproxy.quic.upstream import h3_pool_for as pool_for

    return pool_for(cluster, host, resources)
