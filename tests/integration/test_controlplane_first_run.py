"""``controlplane serve`` as a newcomer runs it, a subprocess with nothing but a home directory:
the state directory made on first use, ADS served at once, ``meshctl`` with no auth flags, CSRs
still needing a token, the README's order (serve before ``token create``), ``--xds-resources``
alone, and file sources reloaded on filesystem notifications (atomic replace, in-place write, a
briefly invalid file) reaching a connected ADS client promptly.

The controlplane binds ``127.0.0.1:0`` (the suite runs beside other controlplanes); every other
setting is its default. Waits are bounded and on events (an ADS response, a log line).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import stat
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3 import discovery_pb2 as d

from controlplane.mesh import default_mesh_text
from meshproxy._gen.ca.v1 import ca_pb2, ca_pb2_grpc
from meshproxy.identity.spiffe import SpiffeId
from meshproxy.identity.svid_client import SvidClient
from meshproxy.xds.resources import CLUSTER, LISTENER

REPO = Path(__file__).resolve().parents[2]
WAIT = 15.0  # bound on one awaited event (start, a log line, an ADS response)
WEB = SpiffeId.parse("spiffe://mesh.local/ns/default/sa/web")


def newcomer_env(home: Path) -> dict[str, str]:
    """The environment of a user whose home is ``home``, with no meshproxy settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_STATE_HOME", "MESHPROXY_STATE_DIR")}
    env.pop("MESHCTL_TOKEN", None)
    return {**env, "HOME": str(home), "PYTHONPATH": str(REPO)}


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    address: str
    stdout: list[str]
    log: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    async def log_line(self, pattern: str) -> str:
        """The next stderr line matching ``pattern`` (earlier lines are passed over)."""
        async with asyncio.timeout(WAIT):
            while not re.search(pattern, line := await self.log.get()):
                pass
        return line


@contextlib.asynccontextmanager
async def serve(home: Path, *args: str, notes: int = 0) -> AsyncIterator[Served]:
    """The controlplane, once it listens; ``notes``: how many lines it prints after that."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "controlplane", "serve", "--xds-address", "127.0.0.1:0", *args),
        *("--xds-tls-address", "127.0.0.1:0"),
        cwd=REPO,
        env=newcomer_env(home),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    log: asyncio.Queue[str] = asyncio.Queue()

    async def pump(stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            log.put_nowait(raw.decode())

    pumping = asyncio.create_task(pump(proc.stderr))
    try:
        lines: list[str] = []
        async with asyncio.timeout(WAIT):
            while len(lines) < 3 + notes:  # the CA, xDS and management API lines, then the notes
                line = (await proc.stdout.readline()).decode()
                assert line, f"controlplane exited with {await proc.wait()}"
                lines.append(line)
        address = next(line for line in lines if "serving xDS (ADS) on" in line).split()[-1]
        yield Served(proc, address, lines, log)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), WAIT)
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
    assert proc.returncode == 0


class Ads:
    """One SotW ADS stream of a ``default``-group node, subscribed to every Cluster."""

    def __init__(self, channel: grpc.aio.Channel, type_url: str = CLUSTER) -> None:
        self.type_url = type_url
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        self.first = True

    async def response(self) -> d.DiscoveryResponse:
        """The next response, ACKed."""
        if self.first:
            node = base_pb2.Node(id="newcomer", cluster="default")
            await self.call.write(d.DiscoveryRequest(node=node, type_url=self.type_url))
            self.first = False
        async with asyncio.timeout(WAIT):
            response = await self.call.read()
        assert response is not grpc.aio.EOF, "the controlplane ended the stream"
        ack = d.DiscoveryRequest(
            type_url=self.type_url, version_info=response.version_info, response_nonce=response.nonce
        )
        await self.call.write(ack)
        return response


def clusters(response: d.DiscoveryResponse) -> dict[str, cluster_pb2.Cluster]:
    out = {}
    for packed in response.resources:
        cluster = cluster_pb2.Cluster()
        packed.Unpack(cluster)
        out[cluster.name] = cluster
    return out


def resources_json(*names: str) -> str:
    entries = [{"@type": CLUSTER, "name": name, "connect_timeout": "1s"} for name in names]
    return json.dumps({"resources": entries})


async def meshctl(home: Path, address: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "controlplane.meshctl", "--server", address, *args),
        cwd=REPO,
        env=newcomer_env(home),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT * 2)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_first_serve_without_flags_serves_the_default_mesh_and_meshctl_needs_no_flags(
    tmp_path: Path,
) -> None:
    state = tmp_path / ".local" / "state" / "meshproxy"
    async with serve(tmp_path, notes=2) as served:
        notes = "".join(served.stdout[3:])
        token = (state / "meshctl.token").read_text().strip()
        assert f"created a management token for spiffe://mesh.local/ns/ops/sa/meshctl: {token}" in notes
        assert f"it is in {state / 'meshctl.token'}" in notes
        for name in ("meshctl.token", "management-tokens", "tokens", "ca/ca.key"):
            assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert (state / "tokens").read_text() == ""

        async with grpc.aio.insecure_channel(served.address) as channel:
            listeners = await Ads(channel, LISTENER).response()
            assert listeners.resources, "the default group's listeners are served at once"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ca_pb2_grpc.CertificateAuthorityStub(channel).Sign(ca_pb2.SignRequest(csr_pem="x"))
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED

        code, out, err = await meshctl(tmp_path, served.address, "status")
        assert code == 0, err
        assert out.startswith("config version 1 from default,") and "hello-v1" in out

    async with serve(tmp_path) as again:  # the second start reuses it all and prints no token
        assert "management token" not in "".join(again.stdout)
        assert (state / "meshctl.token").read_text().strip() == token
        code, _, err = await meshctl(tmp_path, again.address, "status")
        assert code == 0, err


async def test_the_readme_order_serve_then_token_create_issues_an_svid(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    async with serve(tmp_path, "--tokens", str(tokens)) as served:
        assert tokens.read_text() == ""  # created empty, so that serve comes first
        created = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "controlplane", "token", "create", "--tokens", str(tokens)),
            *("--identity", str(WEB)),
            env=newcomer_env(tmp_path),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(created.communicate(), WAIT)
        assert created.returncode == 0
        token_file = tmp_path / "token"
        token_file.write_text(out.decode())
        svid = await SvidClient(served.address, WEB, token_file).fetch()
        assert svid.chain[0].not_valid_after_utc == svid.not_after


async def test_serve_with_only_xds_resources_and_an_address_serves_them(tmp_path: Path) -> None:
    resources = tmp_path / "resources.json"
    resources.write_text(resources_json("raw-a", "raw-b"))
    async with (
        serve(tmp_path, "--xds-resources", str(resources), notes=2) as served,
        grpc.aio.insecure_channel(served.address) as channel,
    ):
        assert {"raw-a", "raw-b"} <= set(clusters(await Ads(channel).response()))


async def test_file_source_changes_reach_a_connected_client_promptly(
    tmp_path: Path,
) -> None:
    resources = tmp_path / "resources.json"
    resources.write_text(resources_json("raw-a"))
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(default_mesh_text())
    latencies: dict[str, float] = {}
    async with (
        serve(tmp_path, "--xds-resources", str(resources), "--mesh", str(mesh)) as served,
        grpc.aio.insecure_channel(served.address) as channel,
    ):
        ads = Ads(channel)
        assert "raw-a" in clusters(await ads.response())

        async def change(what: str, write: Any) -> dict[str, cluster_pb2.Cluster]:
            start = time.monotonic()
            write()
            response = await ads.response()
            latencies[what] = time.monotonic() - start
            return clusters(response)

        def replace_atomically() -> None:  # an editor's save: a new file renamed over the old
            part = tmp_path / ".resources.json.swp"
            part.write_text(resources_json("raw-b"))
            os.replace(part, resources)

        found = await change("atomic replace", replace_atomically)
        assert "raw-b" in found and "raw-a" not in found
        found = await change("in-place write", lambda: resources.write_text(resources_json("raw-c")))
        assert "raw-c" in found and "raw-b" not in found

        # A file caught half-written is refused and the last good one keeps serving; the write
        # that completes it is the next thing the client sees.
        resources.write_text('{"resources": [')
        await served.log_line(r"resources\.json:1:16: JSON syntax error")
        found = await change("after an invalid write", lambda: resources.write_text(resources_json("raw-d")))
        assert "raw-d" in found and "raw-c" not in found

        edited = default_mesh_text().replace("{max_requests: 1000}", "{max_requests: 999}")
        found = await change("mesh file", lambda: mesh.write_text(edited))
        breakers = found["hello|v1"].circuit_breakers.thresholds[0]
        assert breakers.max_requests.value == 999 and "raw-d" in found
    print("reload latency to the first ADS client:", {k: f"{v * 1000:.0f} ms" for k, v in latencies.items()})
