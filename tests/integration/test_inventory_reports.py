"""``meshctl inventory``: the controlplane merges the crypto inventories its sidecars report.

The real ``python -m controlplane serve`` and ``meshctl`` (subprocesses) and web's in-process
sidecar of tests/integration/test_mesh_xds.py, on ADS. The sidecar's inventory gets a handshake
recorded directly (real handshakes fill it in tests/integration/test_crypto_inventory.py); what
is tested here is the path from the sidecar's inventory to the operator: the report over the
ADS channel, the merge, the management API and both renderings.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from meshproxy.tls.engine import Negotiated

from .controlplane_harness import ControlPlaneProcess, controlplane
from .harness import free_port
from .test_mesh_xds import NODE, TIMEOUT, mesh_yaml, sidecar
from .upstreams import aiohttp_upstream

PEER = "spiffe://mesh.local/ns/test/sa/hello"


async def _reported(cp: ControlPlaneProcess) -> list[dict[str, Any]]:
    async with asyncio.timeout(TIMEOUT):
        while True:
            peers = (await cp.meshctl_json("inventory")).get("peers", [])
            if peers:
                return peers  # type: ignore[no-any-return]
            await asyncio.sleep(0.3)


async def test_meshctl_inventory_shows_what_the_sidecars_report(tmp_path: Path) -> None:
    hello = free_port()
    async with (
        aiohttp_upstream("v1") as v1,
        aiohttp_upstream("v2") as v2,
        controlplane(tmp_path, mesh_yaml(hello, v1, v2, "{v1: 100, v2: 0}")) as cp,
        sidecar(cp, "GRPC") as server,
    ):
        assert await cp.meshctl_json("inventory") == {"peers": []}, "nothing reported yet"
        now = time.time()
        classical = Negotiated(
            "TLSv1.3", "X25519", "TLS_AES_128_GCM_SHA256", "ed25519", None, (), (PEER,), "", False
        )
        server.store.inventory.record(classical, "outbound", now)
        (peer,) = await _reported(cp)
        code, table, _ = await cp.meshctl("inventory")
    assert peer["peer"] == PEER and peer["reporters"] == [NODE]
    assert peer["classical_fallbacks"] == "1"  # uint64 in proto JSON
    assert peer["connections"] == [
        {"direction": "outbound", "group": "X25519", "sigalg": "ed25519", "version": "TLSv1.3", "count": "1"}
    ]
    assert peer["last_seen"] == peer["first_seen"] == peer["last_classical_fallback"]
    assert code == 0
    header, row = table.splitlines()
    assert header.split()[:3] == ["PEER", "GROUPS", "SIGNATURES"]
    assert row.split()[:5] == [PEER, "X25519", "ed25519", "TLSv1.3", "1"] and row.split()[-1] == NODE
