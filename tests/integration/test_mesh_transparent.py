"""A transparent sidecar driven by the real controlplane over ADS (Istio's virtualOutbound /
virtualInbound), on loopback without interception.

The controlplane is ``python -m controlplane serve`` on a mesh where ``hello`` is a transparent
group (VIP 10.96.0.10, STRICT inbound) called by ``web``; the proxy is an in-process ``Server``
whose bootstrap only says where ADS is (``node.cluster: hello``). Without iptables nothing is
redirected, so what can be observed on loopback is: the sidecar ACKs the transparent group's
resources (the ledger shows it, not NACKing), both capture listeners are active, and a plaintext
connection to ``virtualInbound`` matches no chain (STRICT: mutual TLS only), is closed and is
counted as ``no_filter_chain_match``. Traffic through the capture itself runs in tests/e2e
(network namespaces, ``meshproxy iptables``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from certs import make_ca, make_leaf, write_leaf

from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.server import Server

from .controlplane_harness import ControlPlaneProcess, controlplane
from .harness import cluster, eventually, free_port

TIMEOUT = 15.0
NODE = "hello-1"
# hello calls nothing (web admits nobody): its group has clusters and listeners only.
TYPES = (
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.listener.v3.Listener",
)


def mesh_yaml(certs: Path, outbound: int, inbound: int, app: int) -> str:
    return f"""\
mesh: {{trust_domain: mesh.local, pq: required, namespace: test}}
sidecars:
  cert_dir: "{certs}/{{group}}"
  virtual_outbound: 127.0.0.1:{outbound}
  virtual_inbound: 127.0.0.1:{inbound}
services:
  - name: hello
    vip: 10.96.0.10
    ports: [{{port: {app}, protocol: http}}]
    endpoints: ["10.1.0.2:{app}"]
    sidecar: {{mode: transparent}}
    allow: [web]
  - name: web
    vip: 10.96.0.20
    port: 8000
    endpoints: ["10.1.0.3:8000"]
    sidecar: {{mode: transparent, outbound_traffic_policy: REGISTRY_ONLY}}
    allow: []
"""


def bootstrap(ads_port: int) -> dict[str, Any]:
    return {
        "node": {"id": NODE, "cluster": "hello"},
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


async def ledger_entry(cp: ControlPlaneProcess) -> dict[str, Any]:
    """The sidecar's ledger entry once it answered every type (ACK or NACK)."""

    def answered(entry: dict[str, Any] | None) -> bool:
        if entry is None:
            return False
        by_type = {r["type_url"]: r for r in entry["resources"]}
        return all(t in by_type and (by_type[t]["version_acked"] or entry["nacking"]) for t in TYPES)

    async with asyncio.timeout(TIMEOUT):
        while not answered(entry := await cp.proxy(NODE)):
            await asyncio.sleep(0.05)
    assert entry is not None
    return entry


async def test_a_transparent_sidecar_acks_its_virtual_listeners_and_refuses_plaintext_inbound(
    tmp_path: Path,
) -> None:
    ca = make_ca()
    write_leaf(make_leaf(ca, "spiffe://mesh.local/ns/test/sa/hello"), tmp_path / "certs" / "hello")
    outbound, inbound, app = free_port(), free_port(), free_port()
    async with controlplane(tmp_path, mesh_yaml(tmp_path / "certs", outbound, inbound, app)) as cp:
        server = Server(parse_bootstrap(json.dumps(bootstrap(cp.port)), source="test"))
        await server.start()
        try:
            entry = await ledger_entry(cp)
            nacks = [r["last_nack_message"] for r in entry["resources"] if r["last_nack_message"]]
            assert (entry["group"], entry["nacking"], nacks) == ("hello", False, [])
            await eventually(lambda: server.ready, TIMEOUT, "the sidecar's first complete config")
            reader, writer = await asyncio.open_connection("127.0.0.1", inbound)
            writer.write(b"GET / HTTP/1.1\r\nhost: hello\r\n\r\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed, nothing answered
            writer.close()
            stats = server.store.listener_stats("virtualInbound")
            await eventually(lambda: stats.no_filter_chain_match == 1, TIMEOUT, "the refusal counted")
        finally:
            await server.close()
