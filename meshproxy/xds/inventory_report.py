"""Reports this sidecar's crypto inventory to the controlplane that serves its ADS stream.

Owns the loop that keeps the controlplane's view (``controlplane/inventory.py``, read by
``meshctl inventory``) current: every ``REPORT_INTERVAL`` seconds, when the inventory changed
since the last accepted report and the ADS stream is up, one ``InventoryReporting.Report`` call
on the ADS channel carrying the whole inventory (bounded by its peer limit) and the node id. A
failed call is tried again at the next tick; a control plane that does not serve the service
(UNIMPLEMENTED: another xDS server) ends the loop, with one log line. Nothing is sent without a
node id (the report is keyed by it). Generated protobuf code is imported here, at the edge.
Must not be imported on the request path.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from meshproxy._gen.mesh.v1 import management_pb2 as pb
from meshproxy._gen.mesh.v1 import management_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from meshproxy.tls.inventory import CryptoInventory
    from meshproxy.xds.client import AdsClient

log = logging.getLogger("meshproxy.xds")

REPORT_INTERVAL = 2.0
REPORT_TIMEOUT = 5.0


def report_message(inventory: CryptoInventory, node_id: str) -> pb.InventoryReport:
    report = pb.InventoryReport(node_id=node_id)
    for peer, entry in inventory.peers.items():
        out = report.peers.add(peer=peer, classical_fallbacks=entry.classical)
        out.first_seen.CopyFrom(_stamp(entry.first_seen))
        out.last_seen.CopyFrom(_stamp(entry.last_seen))
        if entry.classical:
            out.last_classical_fallback.CopyFrom(_stamp(entry.last_classical))
        for (direction, group, sigalg, version), count in sorted(entry.connections.items()):
            out.connections.add(direction=direction, group=group, sigalg=sigalg, version=version, count=count)
    return report


def _stamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


async def report_inventory(
    client: AdsClient, inventory: CryptoInventory, node_id: str, interval: float = REPORT_INTERVAL
) -> None:
    """Runs until cancelled (or until the control plane says it has no such service)."""
    if not node_id:
        return
    reported = 0  # the inventory's version the controlplane has
    while True:
        await asyncio.sleep(interval)
        channel = client.channel
        if channel is None or inventory.version == reported:
            continue
        version = inventory.version
        try:
            await pb_grpc.InventoryReportingStub(channel).Report(
                report_message(inventory, node_id), timeout=REPORT_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                log.info("the control plane takes no crypto inventory reports; not reporting")
                return
            log.debug("crypto inventory report failed: %s", exc.code().name)
            continue
        reported = version
