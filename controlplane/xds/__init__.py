"""The xDS half of the control plane (DESIGN decision 6): Envoy's aggregated discovery service.

Modules, from the data in to the wire out:

- `snapshot`: `Snapshot` (an immutable, versioned set of resources with its consistency check and
  its pre-serialised wire pieces) and the type URL constants;
- `resource_file`: raw xDS resource files (``--xds-resources``) into `Resources`;
- `cache`: `SnapshotCache`, snapshots by node group, the one write path that wakes watchers;
- `streams`: the sans-I/O SotW and delta protocol state machines, one per ADS stream;
- `server`: `AdsServer`, the grpc.aio shell serving both ADS methods;
- `ledger`: `Ledger`, every connected stream's sent/ACKed versions and NACKs, events, metrics.

Generated code comes from the ``xds-protos`` package and is imported by `snapshot`,
`resource_file`, `streams` and `server` only.
"""

from __future__ import annotations

from controlplane.xds.cache import DEFAULT_GROUP, SnapshotCache, SnapshotError
from controlplane.xds.ledger import Event, Ledger, NodeEntry, TypeState
from controlplane.xds.resource_file import load_resource_file, parse_resources
from controlplane.xds.server import AdsServer
from controlplane.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Pieces, Resources, Snapshot

__all__ = [
    "CLUSTER",
    "DEFAULT_GROUP",
    "ENDPOINT",
    "LISTENER",
    "ROUTE",
    "SECRET",
    "AdsServer",
    "Event",
    "Ledger",
    "NodeEntry",
    "Pieces",
    "Resources",
    "Snapshot",
    "SnapshotCache",
    "SnapshotError",
    "TypeState",
    "load_resource_file",
    "parse_resources",
]
