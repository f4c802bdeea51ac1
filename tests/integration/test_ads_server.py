"""`controlplane.xds.AdsServer` over real gRPC on loopback, driven by a raw ADS client (the
generated ``AggregatedDiscoveryServiceStub``): SotW and delta, ACK/NACK in the ledger, stale
nonces, subscriptions, wildcard vs named, removal, group-scoped and coalesced pushes.

To show that a request produced *no* response, a test sends a probe that certainly does (a
request for another type) and checks that the next response on the stream is the probe's: a
stream's requests are processed, and its responses written, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3 import discovery_pb2 as d
from google.rpc import status_pb2
from prometheus_client import CollectorRegistry
from xds_resources import service_snapshot

from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, AdsServer, Ledger, Snapshot, SnapshotCache
from controlplane.xds.server import SERVICE
from controlplane.xds.snapshot import MESSAGES, resource_name

from .harness import eventually

READ_TIMEOUT = 5.0
SNAP1 = service_snapshot("v1", "svc", {"a": 1, "b": 1}, {"a": [1001], "b": [1002]})
SNAP2 = service_snapshot("v2", "svc", {"a": 1}, {"a": [1003]})  # b removed, a's endpoints moved


@dataclass
class ControlPlane:
    cache: SnapshotCache
    ledger: Ledger
    stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub
    channel: grpc.aio.Channel


@pytest.fixture
async def cp() -> AsyncIterator[ControlPlane]:
    cache = SnapshotCache()
    ledger = Ledger(CollectorRegistry())
    server = grpc.aio.server()
    AdsServer(cache, ledger).add_to_server(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield ControlPlane(cache, ledger, ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel), channel)
    finally:
        await channel.close()
        await server.stop(None)


class Stream:
    """One ADS stream of a fake node: write requests, read responses with a bound."""

    def __init__(self, call: Any, node: base_pb2.Node) -> None:
        self.call, self.node, self.first = call, node, True

    async def send(self, request: Any) -> None:
        if self.first:
            request.node.CopyFrom(self.node)
            self.first = False
        await self.call.write(request)

    async def read(self) -> Any:
        async with asyncio.timeout(READ_TIMEOUT):
            response = await self.call.read()
        assert response is not grpc.aio.EOF, "the server ended the stream"
        return response


@contextlib.asynccontextmanager
async def sotw(cp: ControlPlane, node_id: str = "n1", cluster: str = "svc") -> AsyncIterator[Stream]:
    call = cp.stub.StreamAggregatedResources()
    try:
        yield Stream(call, base_pb2.Node(id=node_id, cluster=cluster, user_agent_name="raw-test"))
    finally:
        call.cancel()


@contextlib.asynccontextmanager
async def delta(cp: ControlPlane, node_id: str = "n1", cluster: str = "svc") -> AsyncIterator[Stream]:
    call = cp.stub.DeltaAggregatedResources()
    try:
        yield Stream(call, base_pb2.Node(id=node_id, cluster=cluster))
    finally:
        call.cancel()


def names(response: d.DiscoveryResponse) -> list[str]:
    return sorted(resource_name(MESSAGES[r.type_url].FromString(r.value)) for r in response.resources)


def nack(
    type_url: str, nonce: str, message: str, version: str = "", names: tuple[str, ...] = ()
) -> d.DiscoveryRequest:
    """A NACK as clients send it: the subscription repeated, the last accepted version."""
    return d.DiscoveryRequest(
        type_url=type_url,
        resource_names=names,
        version_info=version,
        response_nonce=nonce,
        error_detail=status_pb2.Status(code=3, message=message),
    )


def state(cp: ControlPlane, node_id: str, type_url: str) -> Any:
    for entry in cp.ledger.entries():
        if entry.node_id == node_id and type_url in entry.types:
            return entry.types[type_url]
    return None


async def test_sotw_initial_ack_push_removal_and_nack(cp: ControlPlane) -> None:
    cp.cache.set_snapshot("svc", SNAP1)
    async with sotw(cp) as s:
        await s.send(d.DiscoveryRequest(type_url=CLUSTER))
        cds = await s.read()
        assert (cds.version_info, cds.nonce, cds.type_url, names(cds)) == ("v1", "1", CLUSTER, ["a", "b"])
        await s.send(d.DiscoveryRequest(type_url=CLUSTER, version_info="v1", response_nonce=cds.nonce))
        await s.send(d.DiscoveryRequest(type_url=ENDPOINT, resource_names=["a", "b"]))
        eds = await s.read()
        assert (eds.type_url, names(eds)) == (ENDPOINT, ["a", "b"])
        await eventually(lambda: state(cp, "n1", CLUSTER).version_acked == "v1", what="CDS ACK")
        entry = cp.ledger.entries()[0]
        assert (entry.kind, entry.cluster, entry.user_agent_name) == ("sotw", "svc", "raw-test")

        cp.cache.set_snapshot("svc", SNAP2)
        cds2, eds2 = await s.read(), await s.read()  # clusters before their endpoints
        assert (cds2.type_url, cds2.version_info, names(cds2)) == (CLUSTER, "v2", ["a"])  # b by absence
        assert (eds2.type_url, names(eds2)) == (ENDPOINT, ["a"])  # EDS is named: only what exists
        await s.send(nack(ENDPOINT, eds2.nonce, "endpoint a: refused", "v1", ("a", "b")))
        await eventually(lambda: state(cp, "n1", ENDPOINT).nack_count == 1, what="EDS NACK")
        eds_state = state(cp, "n1", ENDPOINT)
        assert (eds_state.last_nack_message, eds_state.version_acked) == ("endpoint a: refused", "")
        reg = cp.ledger.registry
        assert reg.get_sample_value("controlplane_xds_nacks_total", {"type": "ClusterLoadAssignment"}) == 1
        assert reg.get_sample_value("controlplane_xds_nodes_nacking") == 1
        # the NACKed content is not resent: the next response is the probe's
        await s.send(d.DiscoveryRequest(type_url=LISTENER))
        assert (await s.read()).type_url == LISTENER
    await eventually(lambda: cp.ledger.entries() == [], what="ledger entry removed on disconnect")
    assert cp.ledger.registry.get_sample_value("controlplane_xds_nodes_nacking") == 0


async def test_sotw_stale_nonce_is_ignored_and_subscription_change_answered(cp: ControlPlane) -> None:
    cp.cache.set_snapshot("svc", SNAP1)
    async with sotw(cp) as s:
        await s.send(d.DiscoveryRequest(type_url=ENDPOINT, resource_names=["a"]))
        first = await s.read()
        cp.cache.set_snapshot("svc", SNAP2)
        second = await s.read()
        assert (first.nonce, second.nonce) == ("1", "2")
        # a NACK and a new subscription answering the superseded response: stale, ignored entirely
        await s.send(nack(ENDPOINT, first.nonce, "late", names=("a", "b")))
        await s.send(d.DiscoveryRequest(type_url=ROUTE, resource_names=["svc-route"]))
        probe = await s.read()
        assert probe.type_url == ROUTE
        assert state(cp, "n1", ENDPOINT).nack_count == 0
        # the same version, a changed subscription: answered
        await s.send(
            d.DiscoveryRequest(
                type_url=ENDPOINT, version_info="v2", response_nonce=second.nonce, resource_names=["a", "b"]
            )
        )
        third = await s.read()
        assert (third.type_url, third.version_info, names(third)) == (ENDPOINT, "v2", ["a"])  # b is gone
        await eventually(lambda: state(cp, "n1", ENDPOINT).subscribed == ("a", "b"), what="subscription")


async def test_sotw_wildcard_vs_named_listeners(cp: ControlPlane) -> None:
    both = service_snapshot("v1", "svc", {"a": 1}, {"a": [1]})
    other = service_snapshot("v1", "other", {"a": 1}, {"a": [1]})
    resources = {t: {**both.resources[t], **other.resources[t]} for t in both.resources}
    cp.cache.set_snapshot("svc", Snapshot("v1", resources))
    async with sotw(cp, "wild") as wild, sotw(cp, "named") as named:
        await wild.send(d.DiscoveryRequest(type_url=LISTENER))
        await named.send(d.DiscoveryRequest(type_url=LISTENER, resource_names=["other"]))
        assert names(await wild.read()) == ["other", "svc"]
        assert names(await named.read()) == ["other"]
        await named.send(d.DiscoveryRequest(type_url=LISTENER, resource_names=["*"], response_nonce="1"))
        assert names(await named.read()) == ["other", "svc"]


async def test_pushes_reach_only_affected_groups_and_are_coalesced(cp: ControlPlane) -> None:
    cp.cache.set_snapshot("svc", SNAP1)
    cp.cache.set_snapshot("billing", SNAP1)
    async with sotw(cp, "n-svc", "svc") as s, sotw(cp, "n-billing", "billing") as b:
        for stream in (s, b):
            await stream.send(d.DiscoveryRequest(type_url=CLUSTER))
            assert (await stream.read()).version_info == "v1"
        for i in range(5):  # a burst: each stream gets at most one push per type
            ports = {"a": [3000 + i], "b": [1]} if i % 2 else {"a": [2000 + i]}
            cp.cache.set_snapshot("svc", service_snapshot(f"burst{i}", "svc", {"a": 1}, ports))
        pushed = await s.read()
        assert (pushed.version_info, names(pushed)) == ("burst4", ["a"])
        await s.send(d.DiscoveryRequest(type_url=LISTENER))
        assert (await s.read()).type_url == LISTENER  # no second CDS push before the probe
        await b.send(d.DiscoveryRequest(type_url=LISTENER))
        assert (await b.read()).type_url == LISTENER  # billing was not pushed anything


async def test_group_without_snapshot_is_served_the_default(cp: ControlPlane) -> None:
    async with sotw(cp, "n", "unknown-service") as s:
        await s.send(d.DiscoveryRequest(type_url=CLUSTER))
        cp.cache.set_snapshot("default", SNAP1)  # waits for a snapshot rather than sending nothing
        assert names(await s.read()) == ["a", "b"]


async def test_delta_changes_only_removed_resources_nack_and_reconnect(cp: ControlPlane) -> None:
    cp.cache.set_snapshot("svc", SNAP1)
    async with delta(cp) as s:
        await s.send(d.DeltaDiscoveryRequest(type_url=CLUSTER, resource_names_subscribe=["*"]))
        cds = await s.read()
        assert sorted(r.name for r in cds.resources) == ["a", "b"]
        assert cds.system_version_info == "v1"
        await s.send(d.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=cds.nonce))
        await s.send(d.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=["a", "b"]))
        eds = await s.read()
        known = {r.name: r.version for r in eds.resources}
        assert sorted(known) == ["a", "b"]
        await eventually(lambda: state(cp, "n1", CLUSTER).version_acked == "v1", what="delta ACK")

        cp.cache.set_snapshot("svc", SNAP2)
        cds2, eds2 = await s.read(), await s.read()
        assert (cds2.type_url, list(cds2.resources), list(cds2.removed_resources)) == (CLUSTER, [], ["b"])
        assert ([r.name for r in eds2.resources], list(eds2.removed_resources)) == (["a"], ["b"])
        known = {"a": eds2.resources[0].version}
        await s.send(
            d.DeltaDiscoveryRequest(
                type_url=ENDPOINT, response_nonce=eds2.nonce, error_detail=status_pb2.Status(message="bad")
            )
        )
        await eventually(lambda: state(cp, "n1", ENDPOINT).last_nack_message == "bad", what="delta NACK")
        await s.send(d.DeltaDiscoveryRequest(type_url=LISTENER, resource_names_subscribe=["svc"]))
        assert (await s.read()).type_url == LISTENER  # the NACKed EDS was not resent

    # a reconnecting client says what it has: only the differences come back
    async with delta(cp, "n2") as s:
        await s.send(
            d.DeltaDiscoveryRequest(
                type_url=ENDPOINT,
                resource_names_subscribe=["a", "b"],
                initial_resource_versions={**known, "b": "old"},
            )
        )
        eds = await s.read()
        assert (list(eds.resources), list(eds.removed_resources)) == ([], ["b"])


async def test_ledger_watchers_see_connect_nack_and_disconnect(cp: ControlPlane) -> None:
    cp.cache.set_snapshot("svc", SNAP1)
    events = cp.ledger.subscribe()
    async with sotw(cp, "watched") as s:
        await s.send(d.DiscoveryRequest(type_url=CLUSTER))
        cds = await s.read()
        await s.send(nack(CLUSTER, cds.nonce, "no thanks"))
        async with asyncio.timeout(READ_TIMEOUT):
            seen = [await anext(events)]
            while seen[-1].kind != "nack":
                seen.append(await anext(events))
    assert [e.kind for e in seen] == ["connected", "sent", "nack"]
    assert (seen[-1].node_id, seen[-1].type_url, seen[-1].message) == ("watched", CLUSTER, "no thanks")
    async with asyncio.timeout(READ_TIMEOUT):
        assert (await anext(events)).kind == "disconnected"
    await events.aclose()


async def test_undecodable_request_ends_only_that_stream(cp: ControlPlane) -> None:
    cp.cache.set_snapshot("svc", SNAP1)
    call = cp.channel.stream_stream(f"/{SERVICE}/StreamAggregatedResources")()
    await call.write(b"\xff\xff\xff")  # not a DiscoveryRequest
    async with asyncio.timeout(READ_TIMEOUT):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
    assert err.value.code() != grpc.StatusCode.OK
    async with sotw(cp) as s:  # the server still serves
        await s.send(d.DiscoveryRequest(type_url=CLUSTER))
        assert names(await s.read()) == ["a", "b"]
