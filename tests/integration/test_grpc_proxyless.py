"""gRPC's own proxyless xDS client (grpcio's ``xds:///`` resolver) against `AdsServer`.

The client resolves LDS (an ``api_listener`` by name) -> RDS -> CDS -> EDS over one ADS stream
from our server, then calls real grpc.aio backends on loopback. It runs in a child process
(``xds_grpc_client.py``) so that ``GRPC_XDS_BOOTSTRAP_CONFIG`` is read fresh. The test follows a
weighted split (100/0, 0/100, 80/20) and an endpoint change, and checks in the ledger that the
client ACKed every type it was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry
from xds_resources import service_snapshot

from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, AdsServer, Ledger, SnapshotCache

from .harness import eventually

CLIENT = Path(__file__).with_name("xds_grpc_client.py")
SERVICE = "greeter"
NODE_ID = "proxyless-test"
ROUNDS = 50  # bound on attempts for the client to follow a change
CALLS = 20
LINE_TIMEOUT = 30.0


def backend(name: str) -> contextlib.AbstractAsyncContextManager[int]:
    """A grpc.aio server whose one method answers with its ``name``; yields its port."""

    async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        "meshtest.Who", {"Name": grpc.unary_unary_rpc_method_handler(who)}
    )
    return grpc_server(lambda server: server.add_generic_rpc_handlers((handler,)))


def control_plane(cache: SnapshotCache, ledger: Ledger) -> contextlib.AbstractAsyncContextManager[int]:
    return grpc_server(AdsServer(cache, ledger).add_to_server)


@contextlib.asynccontextmanager
async def grpc_server(add: Callable[[grpc.aio.Server], None]) -> AsyncIterator[int]:
    server = grpc.aio.server()
    add(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


class Client:
    """The child process: ``calls()`` makes CALLS RPCs and returns their answers by backend."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def calls(self, n: int = CALLS) -> tuple[Counter[str], list[str]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"call {n}\n".encode())
        await self.proc.stdin.drain()
        async with asyncio.timeout(LINE_TIMEOUT):
            line = await self.proc.stdout.readline()
        assert line, f"the xDS client exited ({await self._stderr()})"
        result = json.loads(line)
        return Counter(result["counts"]), result["errors"]

    async def follows(self, expect: Callable[[Counter[str]], bool], what: str) -> Counter[str]:
        seen: list[Any] = []
        for _ in range(ROUNDS):
            counts, errors = await self.calls()
            if not errors and expect(counts):
                return counts
            seen.append((dict(counts), errors[:2]))
        raise AssertionError(f"the gRPC client did not follow {what}; last rounds: {seen[-3:]}")

    async def _stderr(self) -> str:
        assert self.proc.stderr is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                return (await self.proc.stderr.read()).decode(errors="replace")[-2000:]
        return "<no stderr>"


@contextlib.asynccontextmanager
async def xds_client(ads_port: int) -> AsyncIterator[Client]:
    bootstrap = {
        "xds_servers": [
            {
                "server_uri": f"127.0.0.1:{ads_port}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": NODE_ID, "cluster": "proxyless", "locality": {"zone": "a"}},
    }
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(bootstrap)}
    env.pop("GRPC_XDS_BOOTSTRAP", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENT),
        f"xds:///{SERVICE}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        yield Client(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_grpc_xds_client_follows_splits_and_endpoint_changes() -> None:
    cache = SnapshotCache()  # the client's node.cluster "proxyless" has no snapshot: default serves it
    ledger = Ledger(CollectorRegistry())

    def serve(version: str, weights: dict[str, int], ports: dict[str, list[int]]) -> None:
        cache.set_snapshot("default", service_snapshot(version, SERVICE, weights, ports))

    async with (
        backend("A") as port_a,
        backend("B") as port_b,
        backend("C") as port_c,
        control_plane(cache, ledger) as ads_port,
        xds_client(ads_port) as client,
    ):
        serve("v1", {"a": 100, "b": 0}, {"a": [port_a], "b": [port_b]})
        await client.follows(lambda c: set(c) == {"A"}, "the 100/0 split to cluster a")

        serve("v2", {"a": 0, "b": 100}, {"a": [port_a], "b": [port_b]})
        await client.follows(lambda c: set(c) == {"B"}, "the 0/100 split to cluster b")

        serve("v3", {"a": 80, "b": 20}, {"a": [port_a], "b": [port_b]})
        await client.follows(lambda c: set(c) == {"A", "B"}, "the 80/20 split (both clusters)")
        totals: Counter[str] = Counter()
        for _ in range(10):
            counts, errors = await client.calls()
            assert errors == []
            totals += counts
        # 200 calls at 80/20: A is chosen over B far more often (B >= A has odds below 1e-18)
        assert set(totals) == {"A", "B"} and totals["A"] > totals["B"] * 2, totals

        serve("v4", {"a": 0, "b": 100}, {"a": [port_a], "b": [port_c]})  # EDS: b moves to C
        await client.follows(lambda c: set(c) == {"C"}, "the endpoint change of cluster b to C")

        def settled() -> bool:
            entries = [e for e in ledger.entries() if e.node_id == NODE_ID]
            return (
                bool(entries)
                and all(t.version_acked == t.version_sent for t in entries[0].types.values())
                # gRPC drops a cluster of weight 0 from its CDS and EDS subscriptions
                and entries[0].types[CLUSTER].subscribed == ("b",)
                and entries[0].types[ENDPOINT].subscribed == ("b",)
            )

        await eventually(settled, what="the client ACKing everything and leaving cluster a")
        (entry,) = [e for e in ledger.entries() if e.node_id == NODE_ID]
        assert entry.kind == "sotw" and entry.cluster == "proxyless"
        assert entry.user_agent_name.startswith("gRPC"), entry.user_agent_name
        assert entry.types[LISTENER].subscribed == (SERVICE,)
        assert entry.types[ROUTE].subscribed == (f"{SERVICE}-route",)
        for type_url in (LISTENER, ROUTE, CLUSTER, ENDPOINT):
            state = entry.types[type_url]
            assert state.version_acked == state.version_sent != "", (type_url, state)
            assert state.nack_count == 0, (type_url, state.last_nack_message)
        assert entry.types[ENDPOINT].version_acked == "v4"
