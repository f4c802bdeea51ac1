"""Our proxy against our controlplane: the xDS "Done means" of the mesh, end to end on loopback.

The controlplane is the real ``python -m controlplane serve`` (a child process, with ``--mesh``
and ``--management-tokens``), driven by the real ``meshctl`` and by edits of its mesh file; the
proxy is an in-process ``Server`` whose bootstrap only says where ADS is (``node.cluster`` web,
the mesh's sidecar group); the applications are two aiohttp upstreams, hello v1 and v2. The
mesh gives web's sidecar an outbound listener for hello with plaintext EDS clusters (hello's
versions have no sidecar), so traffic is plain HTTP end to end and every response names the
version that served it. A bounded concurrent request loop runs through the proxy while the
config changes; every test asserts that no request failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.server import Server

from .controlplane_harness import ControlPlaneProcess, controlplane, write_atomically
from .harness import cluster, eventually, free_port
from .upstreams import aiohttp_upstream

TIMEOUT = 15.0
NODE = "web-1"
LISTENER = "outbound|hello"
API_TYPES = ["GRPC", "DELTA_GRPC"]
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ALL_TYPES = (CDS, EDS, LDS, RDS)


def mesh_yaml(hello_port: int, v1: int, v2: int, split: str, extra: str = "") -> str:
    """hello (v1, v2 on loopback, no sidecars: plaintext) called by web's outbound-only sidecar."""
    return f"""\
mesh: {{trust_domain: mesh.local, pq: required, namespace: test}}
sidecars: {{cert_dir: "/nonexistent/certs/{{group}}", outbound_address: 127.0.0.1}}
services:
  - name: hello
    port: {hello_port}
    protocol: http
    versions:
      v1: {{endpoints: ["127.0.0.1:{v1}"]}}
      v2: {{endpoints: ["127.0.0.1:{v2}"]}}
    routes:
      - match: {{prefix: /}}
        split: {split}
        timeout: 5s
    allow: [web]
  - name: web
    port: {hello_port + 1 if hello_port < 65535 else 1024}
    sidecar: {{}}
    allow: []
{extra}"""


def bootstrap(ads_port: int, api_type: str) -> dict[str, Any]:
    return {
        "node": {"id": NODE, "cluster": "web"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
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


@contextlib.asynccontextmanager
async def sidecar(cp: ControlPlaneProcess, api_type: str) -> AsyncIterator[Server]:
    """web's sidecar, ready (its first complete configuration applied)."""
    server = Server(parse_bootstrap(json.dumps(bootstrap(cp.port, api_type)), source="test"))
    await server.start()
    assert server.xds is not None
    server.xds.backoff_base = 0.05  # reconnect quickly in tests (the jitter still applies)
    server.xds.backoff_cap = 0.5
    try:
        await eventually(lambda: server.ready, TIMEOUT, "the sidecar's first complete config")
        yield server
    finally:
        await server.close()


class Load:
    """A bounded concurrent request loop through the proxy: which version served each response,
    and every failure (an exception or a status other than 200)."""

    def __init__(self, url: str, workers: int = 4, limit: int = 50_000) -> None:
        self.url = url
        self.workers = workers
        self.limit = limit
        self.served: list[str] = []
        self.failures: list[str] = []
        self._stop = asyncio.Event()

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set() and len(self.served) + len(self.failures) < self.limit:
            try:
                resp = await client.get(self.url)
            except httpx.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if resp.status_code != 200:
                self.failures.append(f"{resp.status_code}: {resp.text[:120]}")
            else:
                self.served.append(resp.headers.get("x-served-by", "?"))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        limits = httpx.Limits(max_connections=self.workers)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            loop = asyncio.get_running_loop()
            tasks = [loop.create_task(self._worker(client)) for _ in range(self.workers)]
            try:
                yield self
            finally:
                self._stop.set()
                await asyncio.gather(*tasks)

    def tail(self, n: int) -> set[str]:
        return set(self.served[-n:]) if len(self.served) >= n else set()

    async def more(self, n: int, what: str) -> set[str]:
        """Waits for ``n`` more responses; the versions that served them."""
        mark = len(self.served)
        await eventually(
            lambda: len(self.served) >= mark + n or bool(self.failures) or self.spent, TIMEOUT, what
        )
        assert self.failures == [], self.failures[:5]
        assert len(self.served) >= mark + n, f"{what}: the load's budget of {self.limit} requests ran out"
        return set(self.served[mark:])

    @property
    def spent(self) -> bool:
        """The workers have sent their ``limit`` requests and stopped."""
        return len(self.served) + len(self.failures) >= self.limit

    async def only(self, version: str, what: str) -> None:
        """Every response from now on comes from ``version`` (after the in-flight ones finish:
        a connection of a replaced listener carries at most one more request on its old routes)."""
        await eventually(lambda: self.tail(20) == {version}, TIMEOUT, what)
        assert await self.more(40, what) == {version}


async def acked(
    cp: ControlPlaneProcess, version: str, *, kind: str, types: tuple[str, ...] = ALL_TYPES
) -> dict[str, Any]:
    """Waits until the ledger (``meshctl proxies -o json``) shows the sidecar ACKed ``version``
    of ``types`` (a change is pushed only for the types whose resources it changed); returns
    the sidecar's entry."""

    def done(entry: dict[str, Any] | None) -> bool:
        if entry is None:
            return False
        by_type = {r["type_url"]: r for r in entry["resources"]}
        return all(t in by_type and by_type[t]["version_acked"] == version for t in types)

    async with asyncio.timeout(TIMEOUT):
        while not done(entry := await cp.proxy(NODE)):
            await asyncio.sleep(0.05)
    assert entry is not None
    assert (entry["group"], entry["stream_kind"], entry["nacking"]) == ("web", kind, False)
    return entry


def stream_kind(api_type: str) -> str:
    return "delta" if api_type == "DELTA_GRPC" else "sotw"


# --------------------------------------------------------------------------- 1 + 4


@pytest.mark.parametrize("api_type", API_TYPES)
async def test_a_split_moves_traffic_from_v1_to_v2_without_a_failed_request(
    tmp_path: Path, api_type: str
) -> None:
    hello = free_port()
    async with (
        aiohttp_upstream("v1") as v1,
        aiohttp_upstream("v2") as v2,
        controlplane(tmp_path, mesh_yaml(hello, v1, v2, "{v1: 100, v2: 0}")) as cp,
        sidecar(cp, api_type) as server,
    ):
        await acked(cp, "1", kind=stream_kind(api_type))
        assert set(server.listeners) == {LISTENER}
        async with Load(f"http://127.0.0.1:{hello}/echo").running() as load:
            assert await load.more(40, "traffic through the sidecar") == {"v1"}
            # Canary through the management API: meshctl split.
            shifted = await cp.meshctl_json("split", "hello", "v1=50", "v2=50")
            assert shifted["ok"] and shifted["applied"] and shifted["version"] == "2"
            await acked(cp, "2", kind=stream_kind(api_type), types=(RDS,))
            await eventually(lambda: load.tail(40) == {"v1", "v2"}, TIMEOUT, "traffic on both versions")
            # Blue-green through the mesh file, which the controlplane reloads when it changes.
            write_atomically(cp.mesh, mesh_yaml(hello, v1, v2, "{v1: 0, v2: 100}"))
            await acked(cp, "3", kind=stream_kind(api_type), types=(RDS,))
            await load.only("v2", "all traffic on v2")
        assert load.failures == [], load.failures[:5]
        # The mesh's sidecars export Istio's metrics (sidecars.istio_metrics, on by default);
        # web's listener for hello is OUTBOUND: it reports as the source.
        series = server.istio.requests
        assert {key[0] for key in series} == {"source"}
        assert {key[7] for key in series} == {"127.0.0.1"}  # destination_service: the Host
        assert sum(s.count for s in series.values()) >= 40


# --------------------------------------------------------------------------- 2


def extra_service(port: int, upstream: int) -> str:
    return f"""\
  - name: extra
    port: {port}
    endpoints: ["127.0.0.1:{upstream}"]
    allow: [web]
"""


async def test_a_config_the_sidecar_rejects_is_nacked_visibly_and_the_last_good_one_keeps_serving(
    tmp_path: Path,
) -> None:
    api_type = "DELTA_GRPC"  # the splits cover both; here the delta NACK through the whole stack
    hello = free_port()
    async with (
        aiohttp_upstream("v1") as v1,
        aiohttp_upstream("v2") as v2,
        controlplane(tmp_path, mesh_yaml(hello, v1, v2, "{v1: 100}")) as cp,
        sidecar(cp, api_type) as server,
    ):
        await acked(cp, "1", kind=stream_kind(api_type))
        async with Load(f"http://127.0.0.1:{hello}/echo").running() as load:
            assert await load.more(20, "traffic through the sidecar") == {"v1"}
            # A new service on a port already taken on the sidecar's host: valid for the
            # controlplane, impossible for the sidecar, which NACKs the listeners it was sent.
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                busy = taken.getsockname()[1]
                bad = tmp_path / "bad.yaml"
                bad.write_text(mesh_yaml(hello, v1, v2, "{v1: 100}", extra_service(busy, v2)))
                applied = await cp.meshctl_json("apply", "-f", str(bad))
                assert applied["ok"] and applied["applied"] and applied["version"] == "2"
                reason = f'listener "outbound|extra": cannot bind 127.0.0.1:{busy}: '

                async def nacking() -> bool:
                    entry = await cp.proxy(NODE)
                    return entry is not None and entry["nacking"]

                async with asyncio.timeout(TIMEOUT):
                    while not await nacking():
                        await asyncio.sleep(0.05)
            # What the operator sees: meshctl proxies, and meshctl status.
            (entry,) = (await cp.meshctl_json("proxies"))["proxies"]
            assert (entry["node_id"], entry["group"], entry["stream_kind"]) == (NODE, "web", "delta")
            # The sidecar binds a listener once it is warm (its routes arrived), so the NACK
            # lands on the response that completed it; whichever it is, exactly one type NACKs.
            (rejected,) = [r for r in entry["resources"] if r["nacking"]]
            counts = (rejected["nack_count"], rejected["version_sent"], rejected["version_acked"])
            assert counts == (1, "2", "1")
            assert reason in rejected["last_nack_message"]
            code, table, _ = await cp.meshctl("status")
            assert "config version 2 " in table and "NACKing: 1" in table
            kind = rejected["type_url"].rsplit(".", 1)[-1]
            assert code == 0 and f"{NODE} (web) NACKed {kind}: " in table and reason in table
            # The last good listeners keep serving, as they were.
            assert set(server.listeners) == {LISTENER}
            assert await load.more(40, "traffic after the NACK") == {"v1"}
            assert server.xds is not None and server.xds.stats.nacks == 1
            # The operator moves the new service to a free port. Only the listeners change: the
            # routes the sidecar rejected with them must come again, unchanged, and be ACKed.
            good = tmp_path / "good.yaml"
            extra = free_port()
            good.write_text(mesh_yaml(hello, v1, v2, "{v1: 100}", extra_service(extra, v2)))
            assert (await cp.meshctl_json("apply", "-f", str(good)))["version"] == "3"
            entry = await acked(cp, "3", kind="delta", types=(LDS, RDS))
            (fixed,) = [r for r in entry["resources"] if r["type_url"] == rejected["type_url"]]
            assert (fixed["nacking"], fixed["nack_count"]) == (False, 1)
            assert reason in fixed["last_nack_message"]  # the history stays visible
            assert set(server.listeners) == {LISTENER, "outbound|extra"}
            async with httpx.AsyncClient() as client:
                resp = await client.get(f"http://127.0.0.1:{extra}/echo")
            assert (resp.status_code, resp.headers["x-served-by"]) == (200, "v2")
            # And the next change reaches the traffic as usual.
            assert (await cp.meshctl_json("split", "hello", "v2=100"))["version"] == "4"
            await load.only("v2", "all traffic on v2")
        assert load.failures == [], load.failures[:5]


# --------------------------------------------------------------------------- 3


@pytest.mark.parametrize("api_type", API_TYPES)
async def test_a_controlplane_restart_fails_no_request_and_the_sidecar_comes_back(
    tmp_path: Path, api_type: str
) -> None:
    hello = free_port()
    async with (
        aiohttp_upstream("v1") as v1,
        aiohttp_upstream("v2") as v2,
        controlplane(tmp_path, mesh_yaml(hello, v1, v2, "{v1: 100}")) as cp,
        sidecar(cp, api_type) as server,
    ):
        await acked(cp, "1", kind=stream_kind(api_type))
        xds = server.xds
        assert xds is not None and xds.stats.streams == 1
        async with Load(f"http://127.0.0.1:{hello}/echo").running() as load:
            assert await load.more(20, "traffic through the sidecar") == {"v1"}
            assert await cp.stop() == 0  # SIGTERM: an orderly stop, as a rollout does
            await eventually(lambda: not xds.connected, TIMEOUT, "the sidecar noticing")
            assert await load.more(40, "traffic without a controlplane") == {"v1"}
            await cp.start()  # the same port, mesh file and CA; a fresh ledger
            entry = await acked(cp, "1", kind=stream_kind(api_type))
            assert entry["node_id"] == NODE and xds.stats.streams >= 2
            shifted = await cp.meshctl_json("split", "hello", "v2=100")
            assert shifted["applied"] and shifted["version"] == "2"
            await acked(cp, "2", kind=stream_kind(api_type), types=(RDS,))
            await load.only("v2", "all traffic on v2 after the restart")
        assert load.failures == [], load.failures[:5]
