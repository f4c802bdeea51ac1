"""The proxy's ADS client against a scripted fake control plane (grpc.aio), with real traffic.

The fake ADS server is written here: the test sends each response itself and reads every
request the proxy sends (subscriptions, ACKs, NACKs), so each step of the protocol is asserted
as it happens. The proxy runs in-process from a bootstrap with ``dynamic_resources``; HTTP
requests go through it to real aiohttp upstreams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3 import discovery_pb2 as dpb
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

import meshproxy.config.bootstrap  # noqa: F401  (registers the typed_config messages)
from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.server import Server
from meshproxy.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

from .harness import HCM, ROUTER, addr, cluster, eventually, free_port
from .upstreams import aiohttp_upstream

INVALID_ARGUMENT = 3
TIMEOUT = 10.0


# --------------------------------------------------------------------------- the fake control plane


class FakeAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """One scripted stream at a time: ``send`` queues a response, ``request`` awaits the next
    request the proxy sent (of a type)."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[Any] = asyncio.Queue()
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.streams = 0
        self.nonce = 0

    async def _serve(self, request_iterator: Any) -> AsyncIterator[Any]:
        self.streams += 1

        async def read() -> None:
            async for request in request_iterator:
                await self.requests.put(request)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while True:
                yield await self.outbox.get()
        finally:
            reader.cancel()

    async def StreamAggregatedResources(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async for response in self._serve(request_iterator):
            yield response

    async def DeltaAggregatedResources(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async for response in self._serve(request_iterator):
            yield response

    async def request(self, type_url: str, where: Callable[[Any], bool] = lambda r: True) -> Any:
        """The next request of ``type_url`` satisfying ``where`` (others of that type are skipped)."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                req = await self.requests.get()
                if req.type_url == type_url and where(req):
                    return req

    def send_sotw(self, type_url: str, version: str, resources: list[Message]) -> str:
        self.nonce += 1
        nonce = f"n{self.nonce}"
        self.outbox.put_nowait(
            dpb.DiscoveryResponse(
                version_info=version, type_url=type_url, nonce=nonce, resources=[_any(r) for r in resources]
            )
        )
        return nonce

    def send_delta(
        self, type_url: str, resources: dict[str, tuple[str, Message]], removed: tuple[str, ...] = ()
    ) -> str:
        self.nonce += 1
        nonce = f"n{self.nonce}"
        self.outbox.put_nowait(
            dpb.DeltaDiscoveryResponse(
                type_url=type_url,
                nonce=nonce,
                system_version_info=str(self.nonce),
                resources=[
                    dpb.Resource(name=n, version=v, resource=_any(m)) for n, (v, m) in resources.items()
                ],
                removed_resources=list(removed),
            )
        )
        return nonce


def _any(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


@contextlib.asynccontextmanager
async def fake_ads(port: int = 0) -> AsyncIterator[tuple[FakeAds, grpc.aio.Server, int]]:
    ads = FakeAds()
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield ads, server, bound
    finally:
        await server.stop(grace=None)


# --------------------------------------------------------------------------- resources


def rds_listener(name: str, route_name: str, port: int, **hcm: Any) -> listener_pb2.Listener:
    doc = {
        "name": name,
        "address": addr("127.0.0.1", port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": HCM,
                            "stat_prefix": name,
                            "rds": {"config_source": {"ads": {}}, "route_config_name": route_name},
                            "http_filters": [
                                {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}
                            ],
                            **hcm,
                        },
                    }
                ]
            }
        ],
    }
    return json_format.ParseDict(doc, listener_pb2.Listener())


def routes(name: str, cluster_name: str, header: str = "") -> route_pb2.RouteConfiguration:
    route: dict[str, Any] = {"match": {"prefix": "/"}, "route": {"cluster": cluster_name}}
    if header:
        route["response_headers_to_add"] = [{"header": {"key": "x-config", "value": header}}]
    doc = {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]}
    return json_format.ParseDict(doc, route_pb2.RouteConfiguration())


def eds_cluster(name: str, **extra: Any) -> cluster_pb2.Cluster:
    doc = {
        "name": name,
        "type": "EDS",
        "connect_timeout": "1s",
        "eds_cluster_config": {"eds_config": {"ads": {}}},
    }
    return json_format.ParseDict({**doc, **extra}, cluster_pb2.Cluster())


def endpoints(name: str, *ports: int) -> endpoint_pb2.ClusterLoadAssignment:
    doc = {
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr("127.0.0.1", p)}} for p in ports]}],
    }
    return json_format.ParseDict(doc, endpoint_pb2.ClusterLoadAssignment())


# --------------------------------------------------------------------------- the proxy


def xds_bootstrap(ads_port: int, api_type: str = "GRPC") -> dict[str, Any]:
    return {
        "node": {"id": "sidecar-1", "cluster": "web"},
        "admin": {"address": addr("127.0.0.1", 0)},
        "static_resources": {"clusters": [cluster("xds", ads_port)]},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
            },
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
    }


def _h2_options() -> dict[str, Any]:
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }


@contextlib.asynccontextmanager
async def xds_proxy(doc: dict[str, Any]) -> AsyncIterator[Server]:
    server = Server(parse_bootstrap(json.dumps(doc), source="test"))
    assert server.config.dynamic is not None
    await server.start()
    assert server.xds is not None
    server.xds.backoff_base = 0.05  # reconnect quickly in tests (the jitter still applies)
    try:
        yield server
    finally:
        await server.close()


def admin_url(server: Server, path: str) -> str:
    address = server.admin.address()
    assert address is not None
    return f"http://127.0.0.1:{address[1]}{path}"


class Load:
    """A bounded concurrent request loop through the proxy: every response is recorded."""

    def __init__(self, url: str, workers: int = 4, limit: int = 5000) -> None:
        self.url = url
        self.workers = workers
        self.limit = limit
        self.served: list[str] = []
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set() and len(self.served) + len(self.failures) < self.limit:
            try:
                resp = await client.get(self.url)
            except httpx.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if resp.status_code != 200:
                self.failures.append(f"{resp.status_code}: {resp.text[:80]}")
            else:
                self.served.append(resp.headers.get("x-served-by", "") + resp.headers.get("x-config", ""))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=self.workers), timeout=5) as client:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._worker(client)) for _ in range(self.workers)]
            try:
                yield self
            finally:
                self._stop.set()
                await asyncio.gather(*self._tasks)

    def seen_since(self, mark: int) -> set[str]:
        return set(self.served[mark:])


async def ready_status(client: httpx.AsyncClient, server: Server) -> int:
    return (await client.get(admin_url(server, "/ready"))).status_code


# --------------------------------------------------------------------------- state of the world


async def test_sotw_warming_ready_update_and_nack() -> None:
    async with (
        aiohttp_upstream("a") as port_a,
        aiohttp_upstream("b") as port_b,
        fake_ads() as (ads, _, ads_port),
        xds_proxy(xds_bootstrap(ads_port)) as server,
        httpx.AsyncClient() as admin,
    ):
        # Rule 1: CDS then LDS, wildcards, the node on the first request only.
        cds = await ads.request(CLUSTER)
        assert (list(cds.resource_names), cds.version_info, cds.response_nonce) == ([], "", "")
        assert cds.node.id == "sidecar-1" and cds.node.cluster == "web"
        lds = await ads.request(LISTENER)
        assert list(lds.resource_names) == [] and not lds.HasField("node")
        assert await ready_status(admin, server) == 503

        nonce = ads.send_sotw(CLUSTER, "c1", [eds_cluster("backend")])
        ack = await ads.request(CLUSTER)
        assert (ack.version_info, ack.response_nonce, ack.HasField("error_detail")) == ("c1", nonce, False)
        eds = await ads.request(ENDPOINT)
        assert list(eds.resource_names) == ["backend"]
        port = free_port()
        ads.send_sotw(LISTENER, "l1", [rds_listener("http", "main", port)])
        assert (await ads.request(LISTENER)).version_info == "l1"
        assert list((await ads.request(ROUTE)).resource_names) == ["main"]
        # Warming: the cluster waits for its endpoints, the listener for its routes.
        assert await ready_status(admin, server) == 503
        assert "http" not in server.listeners and server.clusters.get("backend") is None

        ads.send_sotw(ENDPOINT, "e1", [endpoints("backend", port_a)])
        assert (await ads.request(ENDPOINT)).version_info == "e1"
        assert await ready_status(admin, server) == 503  # the listener still waits for "main"
        ads.send_sotw(ROUTE, "r1", [routes("main", "backend")])
        assert (await ads.request(ROUTE)).version_info == "r1"
        await eventually(lambda: server.ready, TIMEOUT, "ready after the first complete config")
        assert await ready_status(admin, server) == 200
        url = f"http://127.0.0.1:{port}/echo"

        async with Load(url).running() as load:
            await eventually(lambda: "a" in load.seen_since(0), TIMEOUT, "traffic to a")
            # EDS: endpoints move from a to b.
            mark = len(load.served)
            ads.send_sotw(ENDPOINT, "e2", [endpoints("backend", port_b)])
            assert (await ads.request(ENDPOINT)).version_info == "e2"
            await eventually(lambda: load.seen_since(len(load.served) - 4) == {"b"}, TIMEOUT, "traffic to b")
            assert "b" in load.seen_since(mark)
            # RDS: a route change replaces the listener; the old one drains.
            ads.send_sotw(ROUTE, "r2", [routes("main", "backend", header="v2")])
            assert (await ads.request(ROUTE)).version_info == "r2"
            await eventually(lambda: load.seen_since(len(load.served) - 4) == {"bv2"}, TIMEOUT, "route v2")
            # An invalid cluster: NACK with the reason; the last good config keeps serving.
            bad = eds_cluster("backend", connect_timeout="0s")
            nonce = ads.send_sotw(CLUSTER, "c2", [bad])
            nack = await ads.request(CLUSTER)
            assert (nack.version_info, nack.response_nonce) == ("c1", nonce)
            assert nack.error_detail.code == INVALID_ARGUMENT
            assert 'Cluster "backend" (resources[0]): connect_timeout: must be greater than 0' in (
                nack.error_detail.message
            )
            mark = len(load.served)
            await eventually(lambda: len(load.served) > mark + 20, TIMEOUT, "traffic after the NACK")
            assert load.seen_since(mark) == {"bv2"}
        assert load.failures == []
        dump = (await admin.get(admin_url(server, "/config_dump?format=compiled"))).json()
        assert dump["xds"]["types"]["Cluster"]["nacks"] == 1
        assert "connect_timeout" in dump["xds"]["types"]["Cluster"]["last_nack"]
        assert dump["xds"]["types"]["Cluster"]["version_info"] == "c1"


async def test_sotw_control_plane_restart_keeps_serving_and_reconnects() -> None:
    async with (
        aiohttp_upstream("a") as port_a,
        aiohttp_upstream("b") as port_b,
        fake_ads() as (ads, grpc_server, ads_port),
        xds_proxy(xds_bootstrap(ads_port)) as server,
    ):
        port = free_port()
        await _sotw_initial(ads, port, port_a)
        await eventually(lambda: server.ready, TIMEOUT, "ready")
        async with Load(f"http://127.0.0.1:{port}/echo").running() as load:
            await eventually(lambda: "a" in load.seen_since(0), TIMEOUT, "traffic to a")
            await grpc_server.stop(grace=None)
            assert server.xds is not None
            await eventually(lambda: server.xds.stats.stream_failures >= 1, TIMEOUT, "stream loss noticed")
            mark = len(load.served)
            await eventually(lambda: len(load.served) > mark + 20, TIMEOUT, "traffic without a control plane")
            async with fake_ads(ads_port) as (ads2, _, _):
                # On reconnect: the versions held, the named subscriptions again.
                cds = await ads2.request(CLUSTER)
                assert cds.version_info == "c1" and cds.response_nonce == ""
                eds = await ads2.request(ENDPOINT)
                assert (list(eds.resource_names), eds.version_info) == (["backend"], "e1")
                ads2.send_sotw(ENDPOINT, "e2", [endpoints("backend", port_b)])
                assert (await ads2.request(ENDPOINT)).version_info == "e2"
                await eventually(
                    lambda: load.seen_since(len(load.served) - 4) == {"b"}, TIMEOUT, "traffic to b"
                )
        assert load.failures == []
        assert server.ready


async def _sotw_initial(ads: FakeAds, port: int, upstream: int) -> None:
    await ads.request(LISTENER)
    ads.send_sotw(CLUSTER, "c1", [eds_cluster("backend")])
    await ads.request(ENDPOINT, lambda r: list(r.resource_names) == ["backend"])
    ads.send_sotw(ENDPOINT, "e1", [endpoints("backend", upstream)])
    ads.send_sotw(LISTENER, "l1", [rds_listener("http", "main", port)])
    await ads.request(ROUTE, lambda r: list(r.resource_names) == ["main"])
    ads.send_sotw(ROUTE, "r1", [routes("main", "backend")])
    await ads.request(ROUTE, lambda r: r.version_info == "r1")


# --------------------------------------------------------------------------- delta


async def test_delta_subscribe_update_remove_and_reconnect() -> None:
    async with (
        aiohttp_upstream("a") as port_a,
        aiohttp_upstream("b") as port_b,
        fake_ads() as (ads, grpc_server, ads_port),
        xds_proxy(xds_bootstrap(ads_port, "DELTA_GRPC")) as server,
        httpx.AsyncClient() as admin,
    ):
        cds = await ads.request(CLUSTER)
        assert list(cds.resource_names_subscribe) == [] and cds.node.id == "sidecar-1"
        await ads.request(LISTENER)
        assert await ready_status(admin, server) == 503
        nonce = ads.send_delta(CLUSTER, {"backend": ("1", eds_cluster("backend"))})
        ack = await ads.request(CLUSTER)
        assert (ack.response_nonce, ack.HasField("error_detail")) == (nonce, False)
        assert list((await ads.request(ENDPOINT)).resource_names_subscribe) == ["backend"]
        ads.send_delta(ENDPOINT, {"backend": ("1", endpoints("backend", port_a))})
        await ads.request(ENDPOINT, lambda r: r.response_nonce != "")
        port, other = free_port(), free_port()
        ads.send_delta(
            LISTENER,
            {
                "http": ("1", rds_listener("http", "main", port)),
                "spare": ("1", rds_listener("spare", "main", other)),
            },
        )
        await ads.request(LISTENER, lambda r: r.response_nonce != "")
        assert list((await ads.request(ROUTE)).resource_names_subscribe) == ["main"]
        ads.send_delta(ROUTE, {"main": ("1", routes("main", "backend"))})
        await eventually(lambda: server.ready, TIMEOUT, "ready")
        assert await ready_status(admin, server) == 200
        assert (await admin.get(f"http://127.0.0.1:{other}/echo")).headers["x-served-by"] == "a"

        async with Load(f"http://127.0.0.1:{port}/echo").running() as load:
            await eventually(lambda: "a" in load.seen_since(0), TIMEOUT, "traffic to a")
            # An invalid listener: NACK, nothing changes.
            bad = rds_listener("http", "main", port, stat_prefix="")
            nonce = ads.send_delta(LISTENER, {"http": ("2", bad)})
            nack = await ads.request(LISTENER, lambda r: r.response_nonce == nonce)
            assert nack.error_detail.code == INVALID_ARGUMENT
            assert "stat_prefix: is required" in nack.error_detail.message
            # Removal: the spare listener drains and stops accepting.
            ads.send_delta(LISTENER, {}, removed=("spare",))
            await eventually(lambda: "spare" not in server.listeners, TIMEOUT, "spare removed")
            # Control plane restart: the client reports the versions it holds.
            await grpc_server.stop(grace=None)
            async with fake_ads(ads_port) as (ads2, _, _):
                cds = await ads2.request(CLUSTER)
                assert dict(cds.initial_resource_versions) == {"backend": "1"}
                eds = await ads2.request(ENDPOINT)
                assert list(eds.resource_names_subscribe) == ["backend"]
                assert dict(eds.initial_resource_versions) == {"backend": "1"}
                ads2.send_delta(ENDPOINT, {"backend": ("2", endpoints("backend", port_b))})
                await eventually(
                    lambda: load.seen_since(len(load.served) - 4) == {"b"}, TIMEOUT, "traffic to b"
                )
        assert load.failures == []
        async with httpx.AsyncClient() as fresh:  # a new connection: the removed listener is gone
            with contextlib.suppress(httpx.ConnectError):
                resp = await fresh.get(f"http://127.0.0.1:{other}/echo")
                raise AssertionError(f"the removed listener still answered: {resp.status_code}")


async def test_a_listener_that_cannot_bind_is_nacked_and_nothing_changes() -> None:
    async with (
        aiohttp_upstream("a") as port_a,
        fake_ads() as (ads, _, ads_port),
        xds_proxy(xds_bootstrap(ads_port)) as server,
        httpx.AsyncClient() as client,
    ):
        port = free_port()
        await _sotw_initial(ads, port, port_a)
        await eventually(lambda: server.ready, TIMEOUT, "ready")
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            both = [rds_listener("http", "main", port, stat_prefix="v2"), rds_listener("other", "main", busy)]
            nonce = ads.send_sotw(LISTENER, "l2", both)
            nack = await ads.request(LISTENER, lambda r: r.response_nonce == nonce)
        assert nack.version_info == "l1" and nack.error_detail.code == INVALID_ARGUMENT
        assert f'listener "other": cannot bind 127.0.0.1:{busy}: ' in nack.error_detail.message
        assert set(server.listeners) == {"http"}
        chain = server.listeners["http"].config.filter_chains[0]
        assert chain.filter.stat_prefix == "http"  # the change that came with it was not applied
        assert (await client.get(f"http://127.0.0.1:{port}/echo")).headers["x-served-by"] == "a"


async def test_a_connection_the_replaced_listener_accepted_late_is_served_by_its_successor() -> None:
    async with (
        aiohttp_upstream("a") as port_a,
        fake_ads() as (ads, _, ads_port),
        xds_proxy(xds_bootstrap(ads_port)) as server,
    ):
        port = free_port()
        await _sotw_initial(ads, port, port_a)
        await eventually(lambda: server.ready, TIMEOUT, "ready")
        old = server.listeners["http"]
        ads.send_sotw(ROUTE, "r2", [routes("main", "backend", header="v2")])
        await eventually(lambda: server.listeners["http"] is not old, TIMEOUT, "listener replaced")
        assert old.successor is server.listeners["http"] and old.draining
        # A connection the old runtime's accept loop took just before the swap.
        ours, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(old._accept, ours)
        reader, writer = await asyncio.open_connection(sock=theirs)
        writer.write(b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        async with asyncio.timeout(TIMEOUT):
            response = await reader.read()
        writer.close()
        assert response.startswith(b"HTTP/1.1 200") and b"x-config: v2" in response.lower()
