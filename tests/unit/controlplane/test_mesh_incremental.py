"""Incremental publishing: the translator's `ResourceMemo` and the snapshots' `Pieces` kept from
one publish to the next. An endpoint change rebuilds and re-encodes only the changed
ClusterLoadAssignments, every change converges to what a full rebuild serves, groups share the
resources they have in common, and xDS streams (delta and SotW) get only what changed."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2 as d
from prometheus_client import CollectorRegistry

from controlplane.app import ControlPlane
from controlplane.mesh import load_mesh, translate
from controlplane.mesh.memo import ResourceMemo
from controlplane.mesh.model import Allow, Endpoint, Mesh, Policy
from controlplane.mesh.virtual import VIRTUAL_OUTBOUND
from controlplane.xds import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    Ledger,
    Pieces,
    Resources,
    Snapshot,
    SnapshotCache,
)
from controlplane.xds.streams import DeltaStream, SotwStream

TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SERVICES = ("s0", "s1", "s2", "s3")  # transparent sidecars: each group's virtualOutbound holds all


def mesh_text() -> str:
    services = "".join(
        f"""
  - name: {name}
    vip: 10.96.0.{i + 10}
    ports: [{{port: {8080 + i}, protocol: http}}, {{port: {7000 + i}, protocol: tcp}}]
    versions:
      v1: {{endpoints: ["10.1.{i}.2:{8080 + i}", "10.1.{i}.3:{8080 + i}"]}}
      v2: {{endpoints: ["10.1.{i}.4:{8080 + i}"]}}
    routes: [{{split: {{v1: 90, v2: 10}}}}]
    sidecar: {{mode: transparent}}
    allow: [{", ".join(SERVICES)}, caller]"""
        for i, name in enumerate(SERVICES)
    )
    return f"""
mesh: {{trust_domain: mesh.local, pq: required}}
sidecars: {{cert_dir: "/certs/{{group}}"}}
services:{services}
  - name: caller
    port: 9000
    endpoints: ["10.2.0.1:9000"]
    sidecar: {{inbound: "0.0.0.0:15443", app: "127.0.0.1:9000"}}
    allow: [s0]
  - name: plain
    vip: 10.96.1.1
    port: 8000
    endpoints: ["10.3.0.1:8000"]
    allow: [s0, s1, s2, s3, caller]
"""


def loaded() -> Mesh:
    return load_mesh(textwrap.dedent(mesh_text()))[0]


def with_service(mesh: Mesh, name: str, **changes: object) -> Mesh:
    return replace(
        mesh, services=tuple(replace(s, **changes) if s.name == name else s for s in mesh.services)
    )


def moved_endpoint(mesh: Mesh) -> Mesh:
    """s0's v1 loses an endpoint and gains another: one EndpointSlice change."""
    s0 = mesh.service("s0")
    assert s0 is not None
    v1 = replace(s0.versions[0], endpoints=(s0.versions[0].endpoints[0], Endpoint(("10.1.0.9", 8080))))
    return with_service(mesh, "s0", versions=(v1, *s0.versions[1:]))


def snapshots(
    groups: dict[str, Resources], version: str, pieces: Pieces | None = None
) -> dict[str, Snapshot]:
    if pieces is not None:
        pieces.begin()
    return {name: Snapshot(version, resources, pieces) for name, resources in groups.items()}


def served(snaps: dict[str, Snapshot]) -> dict[str, dict[str, dict[str, bytes]]]:
    """Every group's wire pieces: what a stream would be sent."""
    return {group: {t: dict(s.encoded(t).sotw) for t in TYPES} for group, s in snaps.items()}


def versions(snaps: dict[str, Snapshot]) -> dict[tuple[str, str, str], str]:
    return {(g, t, n): v for g, s in snaps.items() for t in TYPES for n, v in s.encoded(t).versions.items()}


def test_an_endpoint_change_rebuilds_and_reencodes_only_the_changed_load_assignments() -> None:
    memo, pieces = ResourceMemo(), Pieces()
    before = snapshots(translate(loaded(), memo), "1", pieces)
    mesh = moved_endpoint(loaded())
    after = snapshots(translate(mesh, memo), "2", pieces)
    old, new = versions(before), versions(after)
    changed = {key for key in new if old.get(key) != new[key]}
    assert {t for _, t, _ in changed} == {ENDPOINT}
    # v1's load assignment at the first port (explicit and default groups: ``s0|v1``) and at the
    # tcp port the transparent groups reach (``outbound|7000|v1|s0``), each built and encoded once
    # for every group that holds it
    names = {n for _, _, n in changed}
    assert names == {"s0|v1", "outbound|7000|v1|s0"}
    assert (memo.built["cla"], pieces.encoded) == (len(names), len(names))
    assert set(memo.built) == {"callee", "cla"}  # and the entries that group each callee's resources
    assert served(after) == served(snapshots(translate(mesh), "2"))  # a full rebuild serves the same


@pytest.mark.parametrize(
    "change",
    [
        moved_endpoint,
        lambda m: with_service(
            m, "s1", routes=(replace(m.services[1].routes[0], split=(("v1", 50), ("v2", 50))),)
        ),
        lambda m: with_service(m, "s2", policy=Policy(lb="least_request", connect_timeout=2.5)),
        lambda m: with_service(m, "s3", allow=(Allow("spiffe://mesh.local/ns/default/sa/caller"),)),
        lambda m: with_service(m, "plain", vips=("10.96.1.2",)),
        lambda m: with_service(m, "s1", sidecar=None),
        lambda m: replace(m, pq="preferred"),
        lambda m: replace(m, outbound_traffic_policy="REGISTRY_ONLY"),
        lambda m: replace(m, sidecars=replace(m.sidecars, istio_metrics=False, cert_dir="/other/{service}")),
        lambda m: replace(m, services=m.services[1:]),
    ],
    ids=[
        "endpoints",
        "split",
        "policy",
        "allow",
        "vip",
        "sidecar",
        "pq",
        "outbound-policy",
        "sidecars",
        "removed",
    ],
)
def test_every_change_converges_to_what_a_full_rebuild_serves(change: object) -> None:
    assert callable(change)
    memo, pieces = ResourceMemo(), Pieces()
    before = snapshots(translate(loaded(), memo), "1", pieces)
    mesh = change(loaded())
    after = snapshots(translate(mesh, memo), "2", pieces)
    full = snapshots(translate(mesh), "2")
    assert served(after) == served(full)
    assert all(s.check() == [] for s in after.values())
    assert served(before) != served(after)  # the change is visible (so the comparison means something)
    # and back again: the memo serves the first mesh as it was
    assert served(snapshots(translate(loaded(), memo), "3", pieces)) == served(before)


def test_an_equal_mesh_loaded_again_builds_and_encodes_nothing() -> None:
    memo, pieces = ResourceMemo(), Pieces()
    first = snapshots(translate(loaded(), memo), "1", pieces)
    built = sum(n for kind, n in memo.built.items() if kind != "callee")
    again = snapshots(translate(loaded(), memo), "2", pieces)  # new objects, equal values
    assert (sum(memo.built.values()), pieces.encoded) == (0, 0)
    assert served(again) == served(first)
    # what the groups have in common is built once: fewer builds than resources served (each
    # group's clusters to sidecars are its own: they name its certificates)
    assert built < sum(len(s.resources[t]) for s in first.values() for t in TYPES) * 0.7


def test_groups_share_the_resources_they_have_in_common() -> None:
    groups = translate(loaded(), ResourceMemo())
    outbound = [groups[name][LISTENER][VIRTUAL_OUTBOUND] for name in SERVICES]
    assert all(listener is outbound[0] for listener in outbound)  # the same targets and policy
    alone = translate(with_service(loaded(), "plain", allow=(Allow("spiffe://mesh.local/ns/default/sa/s1"),)))
    assert alone["s1"][LISTENER][VIRTUAL_OUTBOUND] is not alone["s2"][LISTENER][VIRTUAL_OUTBOUND]
    clusters = [groups[name][CLUSTER]["s1|v1"] for name in ("s0", "s2", "s3")]
    assert clusters[0] is not clusters[1]  # each group's own certificates: /certs/{group}
    assert groups["s0"][ENDPOINT]["s1|v1"] is groups["s2"][ENDPOINT]["s1|v1"]


def stream(kind: str) -> SotwStream | DeltaStream:
    ledger = Ledger(CollectorRegistry(), clock=lambda: NOW)
    node = base_pb2.Node(id="n1", cluster="s1", user_agent_name="test", user_agent_version="9")
    entry = ledger.connect(node=node, cluster="s1", kind=kind, peer="ipv4:127.0.0.1:1")  # type: ignore[arg-type]
    return SotwStream(ledger, entry) if kind == "sotw" else DeltaStream(ledger, entry)


def test_streams_get_only_the_changed_load_assignments_from_the_control_plane() -> None:
    cache = SnapshotCache()
    control = ControlPlane(cache)
    assert control.apply_model(loaded(), "# mesh\n", source="test").applied
    delta, sotw = stream("delta"), stream("sotw")
    for type_url in TYPES:
        delta.receive(d.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=["*"]))
        sotw.receive(d.DiscoveryRequest(type_url=type_url, resource_names=["*"]))
    first = cache.get("s1")
    assert first is not None
    initial = [d.DiscoveryResponse.FromString(b) for b in sotw.responses(first)]
    assert len(delta.responses(first)) == len(initial) == 4
    for response in initial:  # ACK: a SotW stream has one response of a type in flight
        sotw.receive(
            d.DiscoveryRequest(
                type_url=response.type_url,
                resource_names=["*"],
                version_info=response.version_info,
                response_nonce=response.nonce,
            )
        )
    assert control.apply_model(moved_endpoint(loaded()), "# mesh\n", source="test").applied
    second = cache.get("s1")
    assert second is not None and second.version != first.version
    (changed,) = [d.DeltaDiscoveryResponse.FromString(b) for b in delta.responses(second)]
    assert (changed.type_url, [r.name for r in changed.resources]) == (
        ENDPOINT,
        ["outbound|7000|v1|s0", "s0|v1"],
    )
    assert list(changed.removed_resources) == []
    (full,) = [d.DiscoveryResponse.FromString(b) for b in sotw.responses(second)]
    assert full.type_url == ENDPOINT and len(full.resources) == len(second.resources[ENDPOINT])
    full_rebuild = Snapshot(second.version, translate(moved_endpoint(loaded()))["s1"])
    assert full_rebuild.encoded(ENDPOINT).all_sotw == second.encoded(ENDPOINT).all_sotw
