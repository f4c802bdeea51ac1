"""The mesh's crypto inventory: the sidecars' reports, merged by peer identity.

Owns ``InventoryReports`` (the latest report of each node, at most ``MAX_NODES``, the least
recently reporting dropped first; merged on demand by peer SPIFFE ID: first seen the earliest,
last seen the latest, classical fallbacks summed with the latest time, connections summed by
(direction, group, signature algorithm, version) and the reporting nodes listed) and
``InventoryReportingService``, the gRPC ``InventoryReporting`` service sidecars call
(``meshproxy/xds/inventory_report.py``). Served on the xDS port, as ADS, without a management
token: a report speaks for its node only (a node id reused replaces the earlier report). The
management API's ``Inventory`` and ``meshctl inventory`` read the merge.
Must not depend on: the CA, the mesh model, files.
"""

from __future__ import annotations

from collections import OrderedDict

import grpc

from meshproxy._gen.mesh.v1 import management_pb2 as pb
from meshproxy._gen.mesh.v1 import management_pb2_grpc as pb_grpc

MAX_NODES = 10_000
MAX_PEERS = 4096  # per report: a sidecar keeps at most 1,024 (meshproxy/tls/inventory.py)


class InventoryReports:
    def __init__(self, limit: int = MAX_NODES) -> None:
        self.limit = limit
        self.reports: OrderedDict[str, pb.InventoryReport] = OrderedDict()

    def add(self, report: pb.InventoryReport) -> None:
        self.reports.pop(report.node_id, None)
        if len(self.reports) >= self.limit:
            self.reports.popitem(last=False)
        self.reports[report.node_id] = report

    def merged(self) -> list[pb.PeerInventory]:
        """Every peer any node reported, most recently seen first."""
        peers: dict[str, pb.PeerInventory] = {}
        counts: dict[str, dict[tuple[str, str, str, str], int]] = {}
        for node, report in self.reports.items():
            for seen in report.peers:
                into = peers.get(seen.peer)
                if into is None:
                    into = peers[seen.peer] = pb.PeerInventory(peer=seen.peer)
                    into.first_seen.CopyFrom(seen.first_seen)
                    counts[seen.peer] = {}
                elif seen.first_seen.ToNanoseconds() < into.first_seen.ToNanoseconds():
                    into.first_seen.CopyFrom(seen.first_seen)
                if seen.last_seen.ToNanoseconds() > into.last_seen.ToNanoseconds():
                    into.last_seen.CopyFrom(seen.last_seen)
                into.classical_fallbacks += seen.classical_fallbacks
                last = seen.last_classical_fallback.ToNanoseconds()
                if seen.classical_fallbacks and last > into.last_classical_fallback.ToNanoseconds():
                    into.last_classical_fallback.CopyFrom(seen.last_classical_fallback)
                combos = counts[seen.peer]
                for c in seen.connections:
                    key = (c.direction, c.group, c.sigalg, c.version)
                    combos[key] = combos.get(key, 0) + c.count
                into.reporters.append(node)
        for peer, into in peers.items():
            for (direction, group, sigalg, version), n in sorted(counts[peer].items()):
                into.connections.add(
                    direction=direction, group=group, sigalg=sigalg, version=version, count=n
                )
        return sorted(peers.values(), key=lambda p: -p.last_seen.ToNanoseconds())


class InventoryReportingService(pb_grpc.InventoryReportingServicer):
    def __init__(self, reports: InventoryReports) -> None:
        self.reports = reports

    async def Report(
        self, request: pb.InventoryReport, context: grpc.aio.ServicerContext
    ) -> pb.InventoryReportAck:
        if not request.node_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "node_id is required")
        if len(request.peers) > MAX_PEERS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{len(request.peers)} peers; at most {MAX_PEERS}"
            )
        self.reports.add(request)
        return pb.InventoryReportAck()


def add_to_server(service: InventoryReportingService, server: grpc.aio.Server) -> None:
    pb_grpc.add_InventoryReportingServicer_to_server(service, server)
