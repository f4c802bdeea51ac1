"""`controlplane.xds.streams`: the SotW and delta protocol rules, sans-I/O, with a real `Ledger`."""

from __future__ import annotations

from datetime import UTC, datetime

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2 as d
from google.rpc import status_pb2
from prometheus_client import CollectorRegistry
from xds_resources import service_snapshot

from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, Ledger
from controlplane.xds.ledger import Event
from controlplane.xds.snapshot import MESSAGES, resource_name
from controlplane.xds.streams import DeltaStream, SotwStream

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make(kind: str = "sotw") -> tuple[Ledger, SotwStream | DeltaStream]:
    ledger = Ledger(CollectorRegistry(), clock=lambda: NOW)
    node = base_pb2.Node(id="n1", cluster="svc", user_agent_name="test", user_agent_version="9")
    entry = ledger.connect(node=node, cluster="svc", kind=kind, peer="ipv4:127.0.0.1:1")  # type: ignore[arg-type]
    core = SotwStream(ledger, entry) if kind == "sotw" else DeltaStream(ledger, entry)
    return ledger, core


def sotw(raw: list[bytes]) -> list[d.DiscoveryResponse]:
    return [d.DiscoveryResponse.FromString(b) for b in raw]


def delta(raw: list[bytes]) -> list[d.DeltaDiscoveryResponse]:
    return [d.DeltaDiscoveryResponse.FromString(b) for b in raw]


def names(response: d.DiscoveryResponse) -> list[str]:
    return [resource_name(MESSAGES[r.type_url].FromString(r.value)) for r in response.resources]


SNAP1 = service_snapshot("v1", "svc", {"a": 1, "b": 1}, {"a": [1], "b": [2]})
SNAP2 = service_snapshot("v2", "svc", {"a": 1}, {"a": [3]})  # b removed, a's endpoints moved


def test_sotw_first_request_ack_nack_and_stale_nonce() -> None:
    ledger, core = make()
    core.receive(d.DiscoveryRequest(type_url=CLUSTER))
    (first,) = sotw(core.responses(SNAP1))
    assert (first.version_info, first.nonce, first.type_url) == ("v1", "1", CLUSTER)
    assert sorted(names(first)) == ["a", "b"]  # an empty CDS subscription is a wildcard
    assert core.responses(SNAP1) == []  # nothing new to say
    core.receive(d.DiscoveryRequest(type_url=CLUSTER, version_info="v1", response_nonce="1"))
    state = ledger.entries()[0].types[CLUSTER]
    assert (state.version_sent, state.version_acked, state.nonce, state.wildcard) == ("v1", "v1", "1", True)
    # a NACK of a response that is no longer the latest is stale: ignored
    core.receive(
        d.DiscoveryRequest(
            type_url=CLUSTER, response_nonce="0", error_detail=status_pb2.Status(code=3, message="old")
        )
    )
    assert ledger.entries()[0].types[CLUSTER].nack_count == 0
    (second,) = sotw(core.responses(SNAP2))
    core.receive(
        d.DiscoveryRequest(
            type_url=CLUSTER,
            version_info="v1",
            response_nonce=second.nonce,
            error_detail=status_pb2.Status(code=3, message="cluster a: bad"),
        )
    )
    state = ledger.entries()[0].types[CLUSTER]
    assert (state.last_nack_message, state.nack_count, state.nacking, state.version_acked) == (
        "cluster a: bad",
        1,
        True,
        "v1",
    )
    assert ledger.entries()[0].nacking
    assert core.responses(SNAP2) == []  # a NACKed response is not resent until its content changes
    assert sorted(names(sotw(core.responses(SNAP1))[0])) == ["a", "b"]


def test_sotw_first_request_of_a_type_is_answered_whatever_its_nonce() -> None:
    ledger, core = make()
    core.receive(d.DiscoveryRequest(type_url=CLUSTER, version_info="v0", response_nonce="41"))  # reconnect
    (first,) = sotw(core.responses(SNAP1))
    assert (first.type_url, first.nonce) == (CLUSTER, "1")
    assert ledger.entries()[0].types[CLUSTER].version_acked == ""  # nothing of ours was ACKed


def test_sotw_named_subscription_change_is_answered_without_a_new_version() -> None:
    _, core = make()
    core.receive(d.DiscoveryRequest(type_url=ENDPOINT, resource_names=["a"]))
    (first,) = sotw(core.responses(SNAP1))
    assert names(first) == ["a"]
    core.receive(d.DiscoveryRequest(type_url=ENDPOINT, resource_names=["a", "b"], response_nonce="1"))
    (second,) = sotw(core.responses(SNAP1))
    assert (second.version_info, sorted(names(second))) == ("v1", ["a", "b"])
    # RDS/EDS are not full state: a named subscription gets only what it names
    core.receive(d.DiscoveryRequest(type_url=ENDPOINT, resource_names=["b"], response_nonce=second.nonce))
    assert names(sotw(core.responses(SNAP1))[0]) == ["b"]


def test_sotw_lds_by_name_like_grpc_and_removal_by_absence() -> None:
    _, core = make()
    core.receive(d.DiscoveryRequest(type_url=LISTENER, resource_names=["svc"]))
    assert names(sotw(core.responses(SNAP1))[0]) == ["svc"]
    core.receive(d.DiscoveryRequest(type_url=CLUSTER))
    core.responses(SNAP1)
    (cds,) = sotw(core.responses(SNAP2))  # only CDS changed its content (b is gone)
    assert (cds.type_url, names(cds)) == (CLUSTER, ["a"])


def test_sotw_push_order_is_make_before_break() -> None:
    _, core = make()
    for type_url, wanted in ((ROUTE, ["svc-route"]), (LISTENER, []), (ENDPOINT, ["a"]), (CLUSTER, [])):
        core.receive(d.DiscoveryRequest(type_url=type_url, resource_names=wanted))
    assert [r.type_url for r in sotw(core.responses(SNAP1))] == [CLUSTER, ENDPOINT, LISTENER, ROUTE]


def test_delta_only_changes_and_removed_resources() -> None:
    ledger, core = make("delta")
    core.receive(d.DeltaDiscoveryRequest(type_url=CLUSTER))  # legacy wildcard
    core.receive(d.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=["a", "b"]))
    cds, eds = delta(core.responses(SNAP1))
    assert sorted(r.name for r in cds.resources) == ["a", "b"]
    assert sorted(r.name for r in eds.resources) == ["a", "b"]
    assert eds.resources[0].version == SNAP1.resource_version(ENDPOINT, eds.resources[0].name)
    core.receive(d.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=cds.nonce))
    assert ledger.entries()[0].types[CLUSTER].version_acked == "v1"
    cds2, eds2 = delta(core.responses(SNAP2))
    assert (list(cds2.resources), list(cds2.removed_resources)) == ([], ["b"])  # a unchanged
    assert [r.name for r in eds2.resources] == ["a"]
    assert list(eds2.removed_resources) == ["b"]
    assert core.responses(SNAP2) == []


def test_delta_initial_versions_subscribe_unsubscribe_and_nack() -> None:
    ledger, core = make("delta")
    core.receive(
        d.DeltaDiscoveryRequest(
            type_url=ENDPOINT,
            resource_names_subscribe=["a", "b"],
            initial_resource_versions={"a": SNAP1.resource_version(ENDPOINT, "a"), "b": "stale"},
        )
    )
    (eds,) = delta(core.responses(SNAP1))
    assert [r.name for r in eds.resources] == ["b"]  # the client already has a
    core.receive(d.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_unsubscribe=["b"]))
    assert core.responses(SNAP1) == []  # unsubscribing sends nothing
    core.receive(d.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=["b"]))
    (again,) = delta(core.responses(SNAP1))
    assert [r.name for r in again.resources] == ["b"]  # resubscribing resends it
    core.receive(
        d.DeltaDiscoveryRequest(
            type_url=ENDPOINT, response_nonce=again.nonce, error_detail=status_pb2.Status(message="no")
        )
    )
    state = ledger.entries()[0].types[ENDPOINT]
    assert (state.last_nack_message, state.nack_count) == ("no", 1)
    assert core.responses(SNAP1) == []
    core.receive(d.DeltaDiscoveryRequest(type_url=LISTENER, resource_names_subscribe=["*"]))
    (lds,) = delta(core.responses(SNAP1))
    assert [r.name for r in lds.resources] == ["svc"]


def test_ledger_events_and_metrics() -> None:
    ledger, core = make()
    events: list[Event] = []
    remove = ledger.add_listener(events.append)
    core.receive(d.DiscoveryRequest(type_url=CLUSTER))
    core.responses(SNAP1)
    core.receive(
        d.DiscoveryRequest(type_url=CLUSTER, response_nonce="1", error_detail=status_pb2.Status(message="x"))
    )
    assert [(e.kind, e.nonce, e.message) for e in events] == [("sent", "1", ""), ("nack", "1", "x")]
    remove()
    reg = ledger.registry
    assert reg.get_sample_value("controlplane_xds_nacks_total", {"type": "Cluster"}) == 1
    assert reg.get_sample_value("controlplane_xds_pushes_total", {"type": "Cluster"}) == 1
    assert reg.get_sample_value("controlplane_xds_nodes_nacking") == 1
    assert reg.get_sample_value("controlplane_xds_connected_streams", {"kind": "sotw"}) == 1
    entry = ledger.entries()[0]
    assert (entry.node_id, entry.user_agent_name, entry.user_agent_version, entry.connected_at) == (
        "n1",
        "test",
        "9",
        NOW,
    )
    ledger.disconnect(entry)
    assert ledger.entries() == []
    assert reg.get_sample_value("controlplane_xds_nodes_nacking") == 0
    assert reg.get_sample_value("controlplane_xds_connected_streams", {"kind": "sotw"}) == 0
