"""The controlplane's crypto inventory (controlplane/inventory.py): the sidecars' reports merged
by peer identity, and the sidecar's report built from its own inventory."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from controlplane.inventory import InventoryReports
from meshproxy._gen.mesh.v1 import management_pb2 as pb
from meshproxy.tls.engine import Negotiated
from meshproxy.tls.inventory import CryptoInventory
from meshproxy.xds.inventory_report import report_message

A = "spiffe://mesh.local/ns/default/sa/a"
B = "spiffe://mesh.local/ns/default/sa/b"


def _inventory(*handshakes: tuple[str, str, str, float]) -> CryptoInventory:
    inventory = CryptoInventory()
    for peer, direction, group, now in handshakes:
        tls = Negotiated("TLSv1.3", group, "TLS_AES_128_GCM_SHA256", "mldsa65", None, (), (peer,), "", False)
        inventory.record(tls, direction, now)  # type: ignore[arg-type]
    return inventory


def _seconds(stamp: Timestamp) -> float:
    return stamp.ToNanoseconds() / 1e9


def test_a_sidecars_report_carries_its_inventory() -> None:
    report = report_message(
        _inventory((A, "inbound", "X25519MLKEM768", 10.5), (A, "inbound", "X25519", 12.0)), "n1"
    )
    assert report.node_id == "n1"
    (peer,) = report.peers
    assert peer.peer == A and _seconds(peer.first_seen) == 10.5 and _seconds(peer.last_seen) == 12.0
    assert peer.classical_fallbacks == 1 and _seconds(peer.last_classical_fallback) == 12.0
    assert [(c.group, c.count) for c in peer.connections] == [("X25519", 1), ("X25519MLKEM768", 1)]


def test_reports_merge_by_peer_and_a_nodes_new_report_replaces_its_old_one() -> None:
    reports = InventoryReports()
    reports.add(report_message(_inventory((A, "inbound", "X25519MLKEM768", 5.0)), "server-1"))
    reports.add(
        report_message(
            _inventory((A, "outbound", "X25519", 7.0), (B, "outbound", "X25519MLKEM768", 9.0)), "client-1"
        )
    )
    reports.add(
        report_message(
            _inventory((A, "inbound", "X25519MLKEM768", 3.0), (A, "inbound", "X25519MLKEM768", 6.0)),
            "server-1",
        )
    )
    merged = reports.merged()
    assert [p.peer for p in merged] == [B, A], "most recently seen first"
    a = merged[1]
    assert sorted(a.reporters) == ["client-1", "server-1"]
    assert _seconds(a.first_seen) == 3.0 and _seconds(a.last_seen) == 7.0
    assert a.classical_fallbacks == 1 and _seconds(a.last_classical_fallback) == 7.0
    combos = {(c.direction, c.group): c.count for c in a.connections}
    assert combos == {("inbound", "X25519MLKEM768"): 2, ("outbound", "X25519"): 1}, (
        "server-1's first report is gone"
    )


def test_the_node_that_reported_least_recently_is_dropped_past_the_limit() -> None:
    reports = InventoryReports(limit=2)
    for node in ("n1", "n2", "n3"):
        reports.add(pb.InventoryReport(node_id=node))
    assert list(reports.reports) == ["n2", "n3"]
