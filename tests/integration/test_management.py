"""The management API over a real gRPC server (with ADS on the same port): tokens, validate,
apply, dry run, traffic shift, config, the ledger's proxies and the event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from controlplane.app import ControlPlane
from controlplane.management import ManagementService, add_to_server
from controlplane.mesh import default_mesh_text
from controlplane.tokens import Grant, TokensFile, append_token, new_token
from controlplane.xds import LISTENER, ROUTE, AdsServer, Ledger, SnapshotCache
from meshproxy._gen.mesh.v1 import management_pb2 as pb
from meshproxy._gen.mesh.v1 import management_pb2_grpc as pb_grpc

ADMIN = "spiffe://mesh.local/ns/ops/sa/admin"


@dataclass
class Running:
    stub: pb_grpc.MeshManagementStub
    channel: grpc.aio.Channel
    control: ControlPlane
    cache: SnapshotCache
    md: tuple[tuple[str, str], ...]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    tokens = tmp_path / "admin-tokens"
    token = new_token()
    append_token(tokens, token, Grant.parse(ADMIN))
    cache = SnapshotCache()
    ledger = Ledger()
    control = ControlPlane(cache)
    control.start()
    server = grpc.aio.server()
    AdsServer(cache, ledger).add_to_server(server)
    add_to_server(ManagementService(control, ledger, TokensFile(tokens, trust_domain="mesh.local")), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Running(
            pb_grpc.MeshManagementStub(channel),
            channel,
            control,
            cache,
            (("authorization", f"Bearer {token}"),),
        )
    finally:
        await channel.close()
        await server.stop(None)


def hello_split(cache: SnapshotCache) -> list[tuple[str, int]]:
    snapshot = cache.get("web")
    assert snapshot is not None
    route: route_pb2.RouteConfiguration = snapshot.resources[ROUTE]["hello"]
    clusters = route.virtual_hosts[0].routes[0].route.weighted_clusters.clusters
    return [(c.name, c.weight.value) for c in clusters]


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer not-a-known-token-at-all"),)])
async def test_every_call_needs_a_known_token(
    running: Running, metadata: tuple[tuple[str, str], ...]
) -> None:
    calls = [
        running.stub.GetConfig(pb.GetConfigRequest(), metadata=metadata),
        running.stub.Apply(pb.ApplyRequest(mesh_yaml=default_mesh_text()), metadata=metadata),
        running.stub.ShiftTraffic(
            pb.ShiftTrafficRequest(service="hello", weights={"v2": 1}), metadata=metadata
        ),
        running.stub.ListProxies(pb.ListProxiesRequest(), metadata=metadata),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert running.control.version == "1"
    assert hello_split(running.cache) == [("hello|v1", 90), ("hello|v2", 10)]


async def test_dry_run_and_validate_change_nothing_and_apply_bumps_the_version(running: Running) -> None:
    text = default_mesh_text().replace("{v1: 90, v2: 10}", "{v1: 20, v2: 80}")
    for call in (
        running.stub.Apply(pb.ApplyRequest(mesh_yaml=text, dry_run=True), metadata=running.md),
        running.stub.Validate(pb.ValidateRequest(mesh_yaml=text), metadata=running.md),
    ):
        response = await call
        assert response.ok and not response.applied and response.version == "1"
        assert {g.name for g in response.groups} == {"default", "web", "hello-v1", "hello-v2"}
    assert hello_split(running.cache) == [("hello|v1", 90), ("hello|v2", 10)]

    response = await running.stub.Apply(pb.ApplyRequest(mesh_yaml=text), metadata=running.md)
    assert response.ok and response.applied and response.version == "2"
    assert hello_split(running.cache) == [("hello|v1", 20), ("hello|v2", 80)]
    config = await running.stub.GetConfig(pb.GetConfigRequest(), metadata=running.md)
    assert config.version == "2" and config.mesh_yaml == text and config.source == f"api ({ADMIN})"


async def test_an_invalid_config_is_refused_with_its_problems_and_keeps_serving(running: Running) -> None:
    text = default_mesh_text().replace("port: 18080", "port: 99999")
    response = await running.stub.Apply(pb.ApplyRequest(mesh_yaml=text), metadata=running.md)
    assert not response.ok and not response.applied and response.version == "1"
    assert list(response.problems) == ["mesh: services[0].port: 99999 is out of range 1..65535"]
    assert running.cache.get("web").version == "1"  # type: ignore[union-attr]


async def test_split_shifts_the_weights_canary_then_blue_green(running: Running) -> None:
    shift = pb.ShiftTrafficRequest(service="hello", weights={"v1": 50, "v2": 50})
    response = await running.stub.ShiftTraffic(shift, metadata=running.md)
    assert response.ok and response.applied and response.version == "2"
    assert hello_split(running.cache) == [("hello|v1", 50), ("hello|v2", 50)]

    shift = pb.ShiftTrafficRequest(service="hello", weights={"v1": 0, "v2": 100})
    assert (await running.stub.ShiftTraffic(shift, metadata=running.md)).version == "3"
    route = running.cache.get("web").resources[ROUTE]["hello"]  # type: ignore[union-attr]
    assert route.virtual_hosts[0].routes[0].route.cluster == "hello|v2"
    config = await running.stub.GetConfig(pb.GetConfigRequest(), metadata=running.md)
    assert config.source == "shift" and "v2: 100" in config.mesh_yaml

    dry = pb.ShiftTrafficRequest(service="hello", weights={"v1": 1}, dry_run=True)
    assert (await running.stub.ShiftTraffic(dry, metadata=running.md)).version == "3"
    bad = pb.ShiftTrafficRequest(service="nope", weights={"v1": 1})
    response = await running.stub.ShiftTraffic(bad, metadata=running.md)
    assert (
        not response.ok and "service 'nope' is not in the mesh (services: hello, web)" in response.problems[0]
    )


async def test_proxies_show_what_each_node_was_sent_acked_and_nacked(running: Running) -> None:
    ads = ads_pb2_grpc.AggregatedDiscoveryServiceStub(running.channel)
    requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()

    async def outgoing() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (request := await requests.get()) is not None:
            yield request

    first = discovery_pb2.DiscoveryRequest(type_url=LISTENER)
    first.node.id, first.node.cluster = "web-1", "web"
    await requests.put(first)
    stream = ads.StreamAggregatedResources(outgoing())
    response = await stream.read()
    assert [a.type_url for a in response.resources] == [LISTENER]
    nack = discovery_pb2.DiscoveryRequest(
        type_url=LISTENER,
        response_nonce=response.nonce,
        error_detail=status_pb2.Status(code=3, message="listener outbound|hello: port taken"),
    )
    await requests.put(nack)

    async def nacked() -> pb.Proxy:
        while True:
            listed = await running.stub.ListProxies(pb.ListProxiesRequest(), metadata=running.md)
            if listed.proxies and listed.proxies[0].nacking:
                return listed.proxies[0]
            await asyncio.sleep(0.02)

    proxy = await asyncio.wait_for(nacked(), 10)
    assert (proxy.node_id, proxy.group, proxy.stream_kind) == ("web-1", "web", "sotw")
    (state,) = proxy.resources
    assert state.type_url == LISTENER and state.version_sent == "1" and state.nack_count == 1
    assert state.last_nack_message == "listener outbound|hello: port taken"
    await requests.put(None)
    stream.cancel()


async def test_events_stream_config_changes(running: Running) -> None:
    events = running.stub.WatchEvents(pb.WatchEventsRequest(), metadata=running.md)
    shift = pb.ShiftTrafficRequest(service="hello", weights={"v1": 10, "v2": 90})

    async def first_config_event() -> pb.Event:
        async for event in events:
            if event.kind in ("applied", "rejected"):
                return event
        raise AssertionError("the event stream ended")

    waiter = asyncio.ensure_future(first_config_event())
    # The watcher registers when its call reaches the server; shift until the event arrives.
    for _ in range(100):
        await running.stub.ShiftTraffic(shift, metadata=running.md)
        done, _ = await asyncio.wait({waiter}, timeout=0.1)
        if done:
            break
    event = await asyncio.wait_for(waiter, 5)
    assert event.kind == "applied" and event.message.startswith("from shift")
    events.cancel()
