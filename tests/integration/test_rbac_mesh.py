"""The mesh's allowed callers, end to end: controlplane → ADS → two sidecars → RBAC.

The real controlplane serves a mesh where ``api`` (a sidecar with an inbound listener in front
of an aiohttp application) allows ``web`` (an outbound-only sidecar), with ``pq: preferred`` and
``hybrid_callers: dry_run``. Both sidecars are in-process ``Server``s configured only over ADS,
with certificates from one test CA. Checked: web's request crosses to api over PQ mutual TLS and
is allowed by the generated RBAC (api is HTTP: the HTTP filter); an identity of the trust domain
that ``allow`` does not list completes the handshake and gets Envoy's 403 without reaching the
application; a classical caller with web's identity is let through and counted by the dry-run
rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from certs import make_ca, make_leaf, write_leaf

from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.server import Server
from meshproxy.tls import TlsConfig, TlsContext
from meshproxy.tls.policy import OFF, PREFERRED
from meshproxy.tls.transport import connect_tls

from .controlplane_harness import ControlPlaneProcess, controlplane
from .harness import cluster, eventually, free_port
from .test_rbac_network import Session
from .upstreams import aiohttp_upstream

TIMEOUT = 15.0
TD = "spiffe://mesh.local/ns/test/sa"


def mesh_yaml(certs: Path, api_port: int, inbound: int, app: int) -> str:
    return f"""\
mesh: {{trust_domain: mesh.local, pq: preferred, namespace: test, hybrid_callers: dry_run}}
sidecars: {{cert_dir: "{certs}/{{group}}", outbound_address: 127.0.0.1}}
services:
  - name: api
    port: {api_port}
    endpoints: ["127.0.0.1:{inbound}"]
    sidecar: {{inbound: "127.0.0.1:{inbound}", app: "127.0.0.1:{app}"}}
    allow: [web]
  - name: web
    port: {free_port()}
    sidecar: {{}}
    allow: []
"""


def bootstrap(ads_port: int, group: str) -> dict[str, Any]:
    return {
        "node": {"id": f"{group}-1", "cluster": group},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"clusters": [cluster("xds", ads_port)]},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
            },
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
    }


@contextlib.asynccontextmanager
async def sidecar(cp: ControlPlaneProcess, group: str) -> AsyncIterator[Server]:
    server = Server(parse_bootstrap(json.dumps(bootstrap(cp.port, group)), source=group))
    await server.start()
    try:
        await eventually(lambda: server.ready, TIMEOUT, f"{group}'s first complete config")
        yield server
    finally:
        await server.close()


async def direct_get(port: int, client: TlsConfig) -> bytes:
    """A GET over mutual TLS straight to api's inbound listener: the first bytes answered."""
    loop = asyncio.get_running_loop()
    transport, session = await connect_tls(loop, "127.0.0.1", port, TlsContext(client), Session)
    transport.write(b"GET /echo/direct HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
    try:
        async with asyncio.timeout(TIMEOUT):
            while not session.closed:
                session.changed.clear()
                await session.changed.wait()
    finally:
        transport.close()
    return session.received


def client(name: str, *, classical: bool = False) -> TlsConfig:
    leaf = make_leaf(make_ca(), f"{TD}/{name}")
    return TlsConfig(
        server_side=False,
        certificate_chain=leaf.cert_pem,
        private_key=leaf.key_pem,
        trusted_ca=leaf.ca.cert_pem,
        pq_policy=replace(OFF, groups=("X25519",)) if classical else PREFERRED,
    )


async def test_allowed_callers_pass_and_others_are_refused(tmp_path: Path) -> None:
    ca = make_ca()
    for group in ("api", "web"):
        write_leaf(make_leaf(ca, f"{TD}/{group}"), tmp_path / "certs" / group)
    api_port, inbound = free_port(), free_port()
    async with aiohttp_upstream("app") as app:
        text = mesh_yaml(tmp_path / "certs", api_port, inbound, app)
        async with controlplane(tmp_path, text) as cp, sidecar(cp, "api") as api, sidecar(cp, "web"):
            async with httpx.AsyncClient() as http:
                resp = await http.get(f"http://127.0.0.1:{api_port}/echo/hi")
            assert resp.status_code == 200
            enforced = api.store.rbac_stats("http.inbound.rbac")
            shadow = api.store.rbac_stats("http.inbound.rbac.hybrid_")
            assert (enforced.allowed, enforced.denied) == (1, 0)
            assert (shadow.shadow_allowed, shadow.shadow_denied) == (1, 0)  # web's sidecar went hybrid

            refused = await direct_get(inbound, client("ops"))  # authenticated, not allowed
            assert refused.startswith(b"HTTP/1.1 403") and refused.endswith(b"RBAC: access denied")
            assert (enforced.allowed, enforced.denied) == (1, 1)

            answer = await direct_get(inbound, client("web", classical=True))
            assert answer.startswith(b"HTTP/1.1 200")  # allowed: dry run only counts
            assert (enforced.allowed, shadow.shadow_denied) == (2, 1)
