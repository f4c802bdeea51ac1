"""A sidecar that gets its identity from the control plane's CA, end to end.

The inbound sidecar runs as a process with ``--ca-address/--identity/--token-file/--cert-dir``:
it generates its key, has the real gRPC CA sign its CSR, writes the SVID into the directory its
bootstrap names, and serves mutual TLS with it; an outbound sidecar holding an SVID from the same
CA reaches the application through it over X25519MLKEM768.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
import yaml

from controlplane.ca import Issuer
from controlplane.ca_service import CertificateAuthorityService, add_to_server
from controlplane.ca_store import load_or_create
from controlplane.demo.layout import free_port as _free_port
from controlplane.tokens import Grant, TokensFile, append_token
from meshproxy.identity import certs
from meshproxy.identity.spiffe import SpiffeId

from .harness import addr, running_proxy
from .test_mesh_mtls import CLIENT_ID, DOWNSTREAM, SERVER_ID, inbound, outbound
from .upstreams import aiohttp_upstream

TOKEN = "agent-token-0123456789abcdef"




@contextlib.asynccontextmanager
async def running_ca(directory: Path) -> AsyncIterator[tuple[str, certs.CertificateAuthority]]:
    tokens = directory / "tokens"
    append_token(tokens, TOKEN, Grant.parse(SERVER_ID))
    ca = load_or_create(directory / "ca", trust_domain="mesh.local", now=datetime.now(UTC))
    server = grpc.aio.server()
    add_to_server(
        CertificateAuthorityService(Issuer(ca), TokensFile(tokens, trust_domain="mesh.local")), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", ca
    finally:
        await server.stop(None)


@dataclass(frozen=True)
class Issued:
    """An SVID from the CA in the shape tests/certs.py leaves have (``cert_pem``, ``key_pem``, ``ca``)."""

    cert_pem: bytes
    key_pem: bytes
    ca: Issued | None = None


def _leaf(ca: certs.CertificateAuthority, spiffe_id: str) -> Issued:
    key, csr = certs.generate_csr(SpiffeId.parse(spiffe_id))
    svid = certs.sign_csr(ca, csr, SpiffeId.parse(spiffe_id), now=datetime.now(UTC))
    root = Issued(certs.certs_to_pem([ca.cert]), b"")
    return Issued(certs.certs_to_pem([svid]), certs.key_to_pem(key), root)


async def _wait_ready(http: httpx.AsyncClient, proc: asyncio.subprocess.Process, admin_port: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while loop.time() < deadline:
        assert proc.returncode is None, "the sidecar exited"
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get(f"http://127.0.0.1:{admin_port}/ready")).status_code == 200:
                return
        await asyncio.sleep(0.05)  # polling a process we cannot await an event from
    raise AssertionError("the identity-agent sidecar did not become ready within 20 s")


async def test_sidecar_serves_mtls_with_an_svid_from_the_ca(tmp_path: Path) -> None:
    cert_dir = tmp_path / "svid"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    async with running_ca(tmp_path) as (target, ca), aiohttp_upstream("app") as app:
        doc = inbound(app, _leaf(ca, SERVER_ID))
        common = doc["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"][
            "typed_config"
        ]
        assert common["@type"] == DOWNSTREAM
        tls = common["common_tls_context"]
        tls["tls_certificates"] = [
            {
                "certificate_chain": {"filename": str(cert_dir / "cert.pem")},
                "private_key": {"filename": str(cert_dir / "key.pem")},
            }
        ]
        tls["validation_context"]["trusted_ca"] = {"filename": str(cert_dir / "ca.pem")}
        listener_port, admin_port = _free_port(), _free_port()
        doc["static_resources"]["listeners"][0]["address"] = addr("127.0.0.1", listener_port)
        doc["admin"] = {"address": addr("127.0.0.1", admin_port)}
        config = tmp_path / "inbound.yaml"
        config.write_text(yaml.safe_dump(doc))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meshproxy", "run", "-c", str(config),
            "--ca-address", target, "--identity", SERVER_ID,
            "--token-file", str(token_file), "--cert-dir", str(cert_dir),
        )  # fmt: skip
        try:
            async with httpx.AsyncClient() as http:
                await _wait_ready(http, proc, admin_port)
                key_mode = stat.S_IMODE(os.stat(cert_dir / "key.pem").st_mode)
                assert key_mode == 0o600, oct(key_mode)
                served = (await http.get(f"http://127.0.0.1:{admin_port}/certs")).json()
                assert served[0]["cert_chain"][0]["uri_sans"] == [SERVER_ID]
                outbound_doc = outbound(listener_port, _leaf(ca, CLIENT_ID), tmp_path / "a.log")
                async with running_proxy(outbound_doc) as a:
                    resp = await http.get(a.url("/echo/agent", "outbound"))
            assert resp.status_code == 200, resp.text
            seen = dict(json.loads(resp.content)["headers"])
            assert f"By={SERVER_ID}" in seen["x-forwarded-client-cert"]
        finally:
            proc.terminate()
            assert await asyncio.wait_for(proc.wait(), 15) == 0
