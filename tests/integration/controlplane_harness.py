"""The real controlplane for integration tests: ``python -m controlplane serve`` as a child process,
and ``meshctl`` run against it, both driven without blocking the test's event loop.

Owns `ControlPlaneProcess` (start on ``127.0.0.1:0``, plaintext and TLS, and read the bound
ports back from the ``serving`` lines; stop with SIGTERM or SIGKILL; start again on the same
ports with the same CA, mesh file and tokens, as a restarted process would), the management
token it accepts, and
`meshctl` / `meshctl_json` (the real CLI as a subprocess, ``-o json``). The in-process proxy a
test runs shares the event loop, so nothing here may block it: every child is awaited through
asyncio. The controlplane's log goes to ``controlplane.log`` in the work directory (shown when
it fails to start).

Must not depend on: the controlplane's internals beyond the token file format (`controlplane.tokens`)
and the management API's generated stubs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from controlplane.tokens import Grant, append_token, new_token
from meshproxy._gen.mesh.v1 import management_pb2 as pb
from meshproxy._gen.mesh.v1 import management_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
OPERATOR = "spiffe://mesh.local/ns/ops/sa/tester"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
MESHCTL_TIMEOUT = 30.0


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step, so a reload never reads a half-written file."""
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


class ControlPlaneProcess:
    """One controlplane process at a time over a fixed work directory (CA, tokens, log)."""

    def __init__(
        self, workdir: Path, mesh: Path, resources: Path | None = None, args: Sequence[str] = ()
    ) -> None:
        self.workdir = workdir
        self.mesh = mesh
        self.resources = resources
        self.args = tuple(args)  # more ``serve`` flags (e.g. ``--svid-ttl``)
        self.port = 0  # 0 until the first start has bound one; later starts reuse it
        self.tls_port = 0  # the same, for --xds-tls-address
        self.proc: asyncio.subprocess.Process | None = None
        self._channel: grpc.aio.Channel | None = None
        self.log = workdir / "controlplane.log"
        self.token_file = workdir / "operator.token"
        tokens = workdir / "management-tokens"
        if not tokens.exists():
            token = new_token()
            append_token(tokens, token, Grant.parse(OPERATOR))
            self.token_file.write_text(token + "\n", encoding="utf-8")
            (workdir / "bootstrap-tokens").write_text("", encoding="utf-8")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start serving; returns once the process printed that it listens."""
        assert self.proc is None, "already running"
        argv = [
            *(sys.executable, "-m", "controlplane", "serve", "--ca-dir", str(self.workdir / "ca")),
            *("--tokens", str(self.workdir / "bootstrap-tokens")),
            *("--management-tokens", str(self.workdir / "management-tokens")),
            *("--mesh", str(self.mesh), "--xds-address", self.address),
            *("--xds-tls-address", f"127.0.0.1:{self.tls_port}"),
        ]
        if self.resources is not None:
            argv += ["--xds-resources", str(self.resources)]
        argv += self.args
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=log
            )
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while True:
                    line = (await self.proc.stdout.readline()).decode()
                    if not line:
                        raise AssertionError(
                            f"controlplane exited ({await self.proc.wait()}):\n{self.log.read_text()}"
                        )
                    if "serving xDS (ADS) on " in line:
                        self.port = int(line.rsplit(":", 1)[1])
                    elif " over TLS on " in line:  # the last line
                        self.tls_port = int(line.rsplit(":", 1)[1])
                        return
        except BaseException:
            await self.stop(kill=True)
            raise

    async def stop(self, *, kill: bool = False) -> int:
        """SIGTERM (an orderly stop) or SIGKILL (a crash); returns the exit status."""
        proc, self.proc = self.proc, None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if proc is None:
            return 0
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                return await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"the controlplane did not stop within {STOP_TIMEOUT}s") from None

    async def meshctl(self, *args: str) -> tuple[int, str, str]:
        """``meshctl --server … --token-file … ARGS``: exit status, stdout, stderr."""
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "controlplane.meshctl", "--server", self.address),
            *("--token-file", str(self.token_file), *args),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(MESHCTL_TIMEOUT):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def meshctl_json(self, *args: str, expect: int = 0) -> Any:
        """``meshctl -o json ARGS`` parsed; fails unless it exits with ``expect``."""
        code, out, err = await self.meshctl("-o", "json", *args)
        assert code == expect, f"meshctl {' '.join(args)} exited {code}: {out}{err}"
        return json.loads(out)

    async def proxy(self, node_id: str) -> dict[str, Any] | None:
        """The ledger's entry for ``node_id``, or None: ``ListProxies`` called in-process (cheaper
        than a meshctl process per poll), in the shape of ``meshctl proxies -o json``."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.address)
        token = self.token_file.read_text(encoding="utf-8").strip()
        stub = pb_grpc.MeshManagementStub(self._channel)
        listed = await stub.ListProxies(
            pb.ListProxiesRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=10
        )
        as_dict = json_format.MessageToDict(
            listed, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        return next((p for p in as_dict["proxies"] if p["node_id"] == node_id), None)


@contextlib.asynccontextmanager
async def controlplane(
    workdir: Path, mesh_text: str, resources_text: str | None = None, args: Sequence[str] = ()
) -> AsyncIterator[ControlPlaneProcess]:
    """A running controlplane on the mesh ``mesh_text`` (written to ``workdir/mesh.yaml``) and,
    when given, the raw xDS resources ``resources_text`` (``workdir/resources.yaml``); ``args``
    are more ``serve`` flags."""
    mesh = workdir / "mesh.yaml"
    write_atomically(mesh, mesh_text)
    resources = None
    if resources_text is not None:
        resources = workdir / "resources.yaml"
        write_atomically(resources, resources_text)
    cp = ControlPlaneProcess(workdir, mesh, resources, args)
    await cp.start()
    try:
        yield cp
    finally:
        status = await cp.stop()
        assert status in (0, -signal.SIGKILL), f"controlplane exited {status}:\n{cp.log.read_text()}"
