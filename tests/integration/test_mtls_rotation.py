"""Certificate rotation under steady traffic: new handshakes use the new certificate, no request fails.

The inbound sidecar's certificate, key and trust bundle come from files (the way cert-manager
or SPIRE mount them); the test swaps them while requests flow through the outbound sidecar,
which opens a new mTLS connection for every request (``max_requests_per_connection: 1``), so
handshakes keep happening across the swap; a second outbound sidecar holds one pooled connection
opened before the swap, which must carry on without a new handshake.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import time
from typing import Any

import httpx
from certs import make_ca, make_leaf, write_leaf

from .harness import running_proxy
from .test_mesh_mtls import CLIENT_ID, DOWNSTREAM, SERVER_ID, inbound, outbound
from .upstreams import aiohttp_upstream

DEADLINE = 20.0  # seconds: the rotation is picked up on the one-second housekeeping tick


def _from_files(doc: dict[str, Any], cert: pathlib.Path, key: pathlib.Path, ca: pathlib.Path) -> None:
    tls = doc["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["@type"] == DOWNSTREAM
    common = tls["common_tls_context"]
    common["tls_certificates"] = [
        {"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}
    ]
    common["validation_context"]["trusted_ca"] = {"filename": str(ca)}


def _swap(leaf: Any, live: tuple[pathlib.Path, ...], staging: pathlib.Path) -> None:
    """Atomically replace each file, the way a secret volume update lands."""
    for path, data in zip(live, (leaf.cert_pem, leaf.key_pem, leaf.ca.cert_pem), strict=True):
        tmp = staging / path.name
        tmp.write_bytes(data)
        os.replace(tmp, path)


async def test_rotation_under_steady_traffic_fails_no_request(tmp_path: pathlib.Path) -> None:
    first = make_leaf(make_ca(), SERVER_ID)
    second = make_leaf(make_ca(), SERVER_ID)  # same CA, same identity, a new key and serial
    assert first.cert.serial_number != second.cert.serial_number
    live = write_leaf(first, tmp_path / "live")
    staging = tmp_path / "staging"
    staging.mkdir()
    client = make_leaf(make_ca(), CLIENT_ID)
    async with aiohttp_upstream("app") as app:
        doc_b = inbound(app, first)
        _from_files(doc_b, *live)
        async with running_proxy(doc_b) as b:
            doc_a = outbound(b.port("inbound"), client, tmp_path / "a.log")
            doc_a["static_resources"]["clusters"][0]["common_http_protocol_options"] = {
                "max_requests_per_connection": 1
            }
            # A second outbound sidecar keeps one pooled mTLS connection open across the swap.
            doc_pooled = outbound(b.port("inbound"), client, tmp_path / "pooled.log")
            async with (
                running_proxy(doc_a) as a,
                running_proxy(doc_pooled) as pooled,
                httpx.AsyncClient() as http,
            ):
                assert (await http.get(pooled.url("/echo", "outbound"))).status_code == 200

                async def serving_serial() -> str:
                    certs = (await http.get(b.admin_url + "/certs")).json()
                    return str(certs[0]["cert_chain"][0]["serial_number"])

                assert await serving_serial() == format(first.cert.serial_number, "x")
                statuses: list[int] = []
                rotated_at: int | None = None
                started = time.monotonic()
                while time.monotonic() - started < DEADLINE:
                    statuses.append((await http.get(a.url("/echo", "outbound"))).status_code)
                    if len(statuses) == 20:
                        _swap(second, live, staging)
                    new = format(second.cert.serial_number, "x")
                    if rotated_at is None and len(statuses) > 20 and await serving_serial() == new:
                        rotated_at = len(statuses)
                    if rotated_at is not None and len(statuses) >= rotated_at + 20:
                        break
                    await asyncio.sleep(0)  # let the housekeeping tick run between requests
                handshakes = b.server.store.listener_stats("inbound").ssl_handshakes_by_group
                # The connection opened before the rotation carries on: same connection, no new handshake.
                assert (await http.get(pooled.url("/echo", "outbound"))).status_code == 200
                assert pooled.cluster_stats("mesh").upstream_cx_total == 1
    assert rotated_at is not None, "the new certificate was not picked up"
    assert statuses == [200] * len(statuses), f"{statuses.count(200)} of {len(statuses)} succeeded"
    assert handshakes["X25519MLKEM768"] >= len(statuses) + 1, "a handshake per request, plus the pooled one"
