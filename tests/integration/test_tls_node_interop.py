"""Interoperability with an independent TLS stack: Node.js 24 (OpenSSL 3.5), both directions.

Node as the client of a meshproxy inbound listener, and as the server behind a meshproxy
cluster; each side requires TLS 1.3, mutual authentication and X25519MLKEM768 only, so a
completed exchange is itself evidence of the hybrid group; the group is also asserted from
meshproxy's counters and from what Node reports. ``make test`` installs Node 24 from the npm
registry into ``.venv/node`` (the machine's own Node is older and its OpenSSL has no ML-KEM).
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
from typing import Any

import httpx
from certs import make_ca, make_leaf, write_leaf

from .harness import running_proxy
from .test_mesh_mtls import CLIENT_ID, SERVER_ID, inbound, outbound
from .upstreams import aiohttp_upstream, body_json

HERE = pathlib.Path(__file__).parent
NODE = pathlib.Path(
    os.environ.get("MESHPROXY_NODE", HERE.parents[1] / ".venv" / "node" / "node_modules" / ".bin" / "node")
)


def node() -> str:
    assert NODE.exists(), f"Node.js 24 not found at {NODE}: `make test` installs it (npm install node@24)"
    return str(NODE)


async def test_node_client_reaches_an_inbound_sidecar_over_x25519mlkem768(tmp_path: pathlib.Path) -> None:
    server = make_leaf(make_ca(), SERVER_ID)
    client_files = write_leaf(make_leaf(make_ca(), CLIENT_ID), tmp_path)
    async with aiohttp_upstream("app") as app, running_proxy(inbound(app, server)) as b:
        proc = await asyncio.create_subprocess_exec(
            node(), str(HERE / "node" / "client.js"), str(b.port("inbound")), *map(str, client_files),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, (out + err).decode()
        seen: dict[str, Any] = json.loads(out)
        assert seen["status"] == 200 and seen["protocol"] == "TLSv1.3"
        assert f"URI:{SERVER_ID}" in seen["peer"]
        stats = b.server.store.listener_stats("inbound")
        assert stats.ssl_handshakes_by_group == {"X25519MLKEM768": 1}


async def test_outbound_sidecar_reaches_a_node_server_over_x25519mlkem768(tmp_path: pathlib.Path) -> None:
    server_files = write_leaf(make_leaf(make_ca(), SERVER_ID), tmp_path)
    client = make_leaf(make_ca(), CLIENT_ID)
    proc = await asyncio.create_subprocess_exec(
        node(), str(HERE / "node" / "server.js"), *map(str, server_files),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("listening "), line
        port = int(line.split()[1])
        doc = outbound(port, client, tmp_path / "a.log")
        async with running_proxy(doc) as a, httpx.AsyncClient() as http:
            resp = await http.get(a.url("/", "outbound"))
        assert resp.status_code == 200, resp.text
        seen = body_json(resp.content)
        assert seen["protocol"] == "TLSv1.3" and seen["authorized"] is True
        assert f"URI:{CLIENT_ID}" in str(seen["peer"])
        if seen["group"] is not None:  # Node names hybrid groups only in newer releases
            assert seen["group"] == "X25519MLKEM768"
    finally:
        proc.terminate()
        await proc.wait()
