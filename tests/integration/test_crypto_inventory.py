"""The crypto inventory over real mutual TLS: ``/crypto_inventory`` and its Prometheus series.

Two sidecars (tests/integration/test_mesh_mtls.py's pair): a hybrid link, then a client that
offers only X25519 to a server that accepts both (a classical fallback). Each side keeps the
other's SPIFFE ID: B (inbound) the client's, A (outbound) the server's.
"""

from __future__ import annotations

import pathlib

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .test_mesh_mtls import CLIENT_ID, SERVER_ID, mesh
from .upstreams import aiohttp_upstream


async def _inventory(admin: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient() as http:
        answer = await http.get(admin + "/crypto_inventory")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    return answer.json()["peers"]  # type: ignore[no-any-return]


async def test_both_sides_keep_the_peer_and_what_it_negotiated(tmp_path: pathlib.Path) -> None:
    async with aiohttp_upstream("app") as app, mesh(app, tmp_path / "a.log") as (a, b):
        async with httpx.AsyncClient() as http:
            assert (await http.get(a.url("/x", "outbound"))).status_code == 200
        (seen_by_b,) = await _inventory(b.admin_url)
        (seen_by_a,) = await _inventory(a.admin_url)
        async with httpx.AsyncClient() as http:
            scrape = (await http.get(b.admin_url + "/stats/prometheus")).text
    assert seen_by_b["peer"] == CLIENT_ID and seen_by_a["peer"] == SERVER_ID
    for seen, direction in ((seen_by_b, "inbound"), (seen_by_a, "outbound")):
        assert seen["groups"] == ["X25519MLKEM768"] and seen["tls_versions"] == ["TLSv1.3"]
        assert seen["signature_algorithms"] == ["ecdsa_secp256r1_sha256"]
        assert seen["classical_fallbacks"] == 0 and seen["last_classical_fallback"] is None
        assert [(c["direction"], c["count"]) for c in seen["connections"]] == [(direction, 1)]  # type: ignore[attr-defined]
    series = {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(scrape)
        if family.name == "meshproxy_peer_tls_connections"
        for s in family.samples
    }
    labels = (
        ("group", "X25519MLKEM768"),
        ("peer", CLIENT_ID),
        ("sigalg", "ecdsa_secp256r1_sha256"),
        ("version", "TLSv1.3"),
    )
    assert series == {labels: 1.0}


async def test_a_classical_fallback_is_kept_with_its_time(tmp_path: pathlib.Path) -> None:
    both = {"curves": ["X25519MLKEM768", "X25519"]}
    classical = {"curves": ["X25519"]}
    async with (
        aiohttp_upstream("app") as app,
        mesh(app, tmp_path / "a.log", inbound=both, outbound=classical) as (a, b),
    ):
        async with httpx.AsyncClient() as http:
            assert (await http.get(a.url("/x", "outbound"))).status_code == 200
        (seen,) = await _inventory(b.admin_url)
    assert seen["groups"] == ["X25519"]
    assert seen["classical_fallbacks"] == 1
    assert seen["last_classical_fallback"] == seen["last_seen"]
