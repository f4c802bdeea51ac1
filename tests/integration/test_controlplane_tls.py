"""The controlplane's gRPC over TLS (15012), end to end: a real controlplane process, a real sidecar.

The sidecar (``python -m meshproxy run``) reaches the controlplane's TLS port for both its SVID
(``--ca-address`` with ``--ca-trust``) and its configuration (ADS on a static ``xds`` cluster
with an ``UpstreamTlsContext``), through a relay that reads the key-exchange group of every
ServerHello (grpcio cannot say which it negotiated). A sidecar with another trust bundle is
refused and says why, and keeps retrying. The plaintext port refuses a non-loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controlplane.tokens import Grant, append_token, new_token
from meshproxy.identity import certs
from meshproxy.identity.source import load_material

from .controlplane_harness import REPO, ControlPlaneProcess
from .controlplane_harness import controlplane as running_controlplane
from .tls_relay import X25519MLKEM768, GroupRelay

WEB = "spiffe://mesh.local/ns/default/sa/web"
UPSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
WAIT = 30.0
# A raw resource the controlplane serves to the default group: the sidecar has its config when
# it accepted this cluster.
FROM_CP = {
    "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "name": "from-the-controlplane",
    "type": "STATIC",
    "connect_timeout": "1s",
    "load_assignment": {"cluster_name": "from-the-controlplane", "endpoints": []},
}


def controlplane(tmp_path: Path) -> contextlib.AbstractAsyncContextManager[ControlPlaneProcess]:
    """A mesh with no services: the default group serves `FROM_CP` alone."""
    mesh = "mesh: {trust_domain: mesh.local}\nservices: []\n"
    return running_controlplane(tmp_path, mesh, json.dumps({"resources": [FROM_CP]}))


def bootstrap(path: Path, port: int, trusted_ca: Path, sni: str = "localhost") -> Path:
    endpoint = {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
    tls = {
        "@type": UPSTREAM,
        "sni": sni,
        "common_tls_context": {"validation_context": {"trusted_ca": {"filename": str(trusted_ca)}}},
    }
    xds = {
        "name": "xds",
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [endpoint]}]},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }
    doc = {
        "node": {"id": "web-sidecar", "cluster": "web"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"clusters": [xds]},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
    }
    path.write_text(json.dumps(doc))
    return path


class Sidecar:
    """``meshproxy run`` as a child process; its log lines collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._new = asyncio.Event()
        self._pump = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode())
            self._new.set()
        self._new.set()

    async def wait_for(self, text: str, count: int = 1) -> list[str]:
        """The first ``count`` log lines containing ``text``, once there are that many."""
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    found = [line for line in self.lines if text in line]
                    if len(found) >= count:
                        return found[:count]
                    assert not self._pump.done(), "the sidecar exited:\n" + "".join(self.lines)
                    self._new.clear()
                    await self._new.wait()
        except TimeoutError:
            raise AssertionError(f"no {count} line(s) with {text!r}:\n" + "".join(self.lines)) from None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
        await asyncio.wait_for(self.proc.wait(), WAIT)
        await self._pump


@contextlib.asynccontextmanager
async def sidecar(
    tmp_path: Path,
    cp: ControlPlaneProcess,
    port: int,
    trust: Path,
    identity: bool = True,
    sni: str = "localhost",
) -> AsyncIterator[Sidecar]:
    """The sidecar, its ADS (and with ``identity`` its CA client) on ``port``, trusting ``trust``,
    sending ``sni`` to ADS."""
    argv = [
        sys.executable,
        "-m",
        "meshproxy",
        "run",
        "-c",
        str(bootstrap(tmp_path / "boot.json", port, trust, sni)),
    ]
    if identity:
        token = new_token()
        append_token(cp.workdir / "bootstrap-tokens", token, Grant.parse(WEB))
        token_file = tmp_path / "web.token"
        token_file.write_text(token + "\n")
        argv += ["--ca-address", f"127.0.0.1:{port}", "--identity", WEB, "--token-file", str(token_file)]
        argv += ["--cert-dir", str(tmp_path / "certs"), "--ca-trust", str(trust)]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=REPO,
        stderr=asyncio.subprocess.PIPE,
    )
    car = Sidecar(proc)
    try:
        yield car
    finally:
        await car.stop()


async def test_a_sidecar_gets_its_svid_and_config_over_tls_with_x25519mlkem768(tmp_path: Path) -> None:
    async with controlplane(tmp_path) as cp, GroupRelay(cp.tls_port) as relay:
        trust = cp.workdir / "ca" / "ca.crt"
        async with sidecar(tmp_path, cp, relay.port, trust) as car:
            await car.wait_for("first complete configuration applied")
            await car.wait_for("ADS: accepted Cluster version 1 (1 resource(s))")  # FROM_CP
            material = load_material(
                *((tmp_path / "certs" / name).read_bytes() for name in ("cert.pem", "key.pem", "ca.pem")),
                origins=("cert.pem", "key.pem", "ca.pem"),
            )
            assert str(material.spiffe_id) == WEB
            assert material.bundle_pem == trust.read_bytes()
        # One connection for the CSR, at least one for ADS: every ServerHello chose the hybrid.
        assert len(relay.chosen) >= 2, relay.chosen
        assert {(c.group, c.retry) for c in relay.chosen} == {(X25519MLKEM768, False)}, relay.chosen


@pytest.mark.parametrize(
    ("identity", "failure", "bundle"),
    [
        (True, f"SVID for {WEB}: attempt", "{other}"),
        # The static cluster's trusted_ca was read once (no cert and key files beside it to watch).
        (False, "ADS stream to ", "(trusted_ca of cluster xds)"),
    ],
    ids=["ca-client", "ads-client"],
)
async def test_a_sidecar_with_another_trust_bundle_is_refused_says_why_and_retries(
    tmp_path: Path, identity: bool, failure: str, bundle: str
) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_bytes(certs.certs_to_pem([certs.generate_ca("mesh.local", now=datetime.now(UTC)).cert]))
    async with controlplane(tmp_path) as cp, sidecar(tmp_path, cp, cp.tls_port, other, identity) as car:
        refusals = await car.wait_for(failure, count=2)  # refused, and tried again after a backoff
        for line in refusals:
            reason = "the controlplane's certificate does not verify against the trust bundle "
            assert reason + bundle.format(other=other) in line
            assert "CERTIFICATE_VERIFY_FAILED" in line
        assert not [line for line in car.lines if "ADS: accepted" in line or "issued by" in line]


async def test_a_certificate_that_does_not_name_the_server_name_sent_is_refused(tmp_path: Path) -> None:
    async with controlplane(tmp_path) as cp:
        trust = cp.workdir / "ca" / "ca.crt"
        async with sidecar(tmp_path, cp, cp.tls_port, trust, identity=False, sni="elsewhere.example") as car:
            refusals = await car.wait_for("ADS stream to ", count=2)
        for line in refusals:
            assert "the controlplane's certificate does not name the host dialled (or the SNI sent)" in line
            assert "--xds-tls-san" in line


async def test_the_plaintext_port_refuses_a_non_loopback_address_unless_allowed(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "controlplane", "serve", "--state-dir", str(tmp_path / "state")]
    argv += ["--xds-tls-address", "off", "--xds-address", "0.0.0.0:0"]
    refused = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(refused.communicate(), WAIT)
    assert refused.returncode == 2, err
    assert out == b""
    assert b"--xds-address: 0.0.0.0:0 is not a loopback address" in err
    assert b"--allow-plaintext-remote" in err
    log = (tmp_path / "allowed.log").open("wb")
    allowed = await asyncio.create_subprocess_exec(
        *argv,
        "--allow-plaintext-remote",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert allowed.stdout is not None
        line = await asyncio.wait_for(allowed.stdout.readline(), WAIT)
        assert line.startswith(b"controlplane: serving the CA on 0.0.0.0:"), line
    finally:
        allowed.terminate()
        await asyncio.wait_for(allowed.communicate(), WAIT)
        log.close()
    assert allowed.returncode == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read the CA trust bundle"), ("not a certificate\n", "CA trust bundle")],
    ids=["missing", "not-pem"],
)
async def test_an_unusable_ca_trust_bundle_stops_the_first_start_naming_it(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    trust = tmp_path / "root-cert.pem"
    if content is not None:
        trust.write_text(content)
    token_file = tmp_path / "token"
    token_file.write_text("some-token-0123456789\n")
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "meshproxy", "run", "-c", str(tmp_path / "unused.yaml")),
        *("--ca-address", "127.0.0.1:9", "--identity", WEB, "--token-file", str(token_file)),
        *("--cert-dir", str(tmp_path / "certs"), "--ca-trust", str(trust)),
        cwd=REPO,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode == 3, err
    assert b"cannot obtain the workload identity: TRUST_FILE: " in err
    assert problem.encode() in err and str(trust).encode() in err
    assert b"Traceback" not in err
