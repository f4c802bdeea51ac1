"""Two sidecars over post-quantum mutual TLS, configured with Envoy's TLS protos.

client → sidecar A (plaintext outbound listener; cluster with an UpstreamTlsContext) ══ mTLS ══▶
sidecar B (inbound listener with a DownstreamTlsContext that requires a client certificate and
matches its SPIFFE ID) → application. Covers: X25519MLKEM768 negotiated and counted, the peer
identity in XFCC and in the access log, and refusals (wrong client identity, a classical-only
client against a server that requires the hybrid group, a client certificate from another CA,
plaintext sent to the TLS port, an expired client certificate, one without a SPIFFE ID, none at
all), each refused with its reason counted and nothing reaching the application.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from certs import make_ca, make_leaf, write_leaf

from meshproxy.identity.certs import Algorithm

from .harness import Proxy, bootstrap, cluster, http_listener, read_access_log, route, running_proxy
from .upstreams import aiohttp_upstream, body_json, counting_upstream

DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
CLIENT_ID = "spiffe://mesh.local/ns/default/sa/frontend"
SERVER_ID = "spiffe://mesh.local/ns/default/sa/backend"


def _common(leaf: Any, curves: list[str], peer_id: str) -> dict[str, Any]:
    return {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "ecdh_curves": curves},
        "tls_certificates": [
            {
                "certificate_chain": {"inline_bytes": _b64(leaf.cert_pem)},
                "private_key": {"inline_bytes": _b64(leaf.key_pem)},
            }
        ],
        "validation_context": {
            "trusted_ca": {"inline_bytes": _b64(leaf.ca.cert_pem)},
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": peer_id}}],
        },
    }


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def inbound(
    app_port: int, leaf: Any, *, allow: str = CLIENT_ID, curves: list[str] | None = None
) -> dict[str, Any]:
    """Sidecar B's bootstrap: TLS listener "inbound" → cluster "app"."""
    listener = http_listener([route("/", "app")], name="inbound")
    listener["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM,
            "require_client_certificate": True,
            "common_tls_context": _common(leaf, curves or ["X25519MLKEM768"], allow),
        },
    }
    return bootstrap([listener], [cluster("app", app_port)])


def outbound(
    inbound_port: int,
    leaf: Any,
    log: pathlib.Path,
    *,
    expect: str = SERVER_ID,
    curves: list[str] | None = None,
) -> dict[str, Any]:
    """Sidecar A's bootstrap: plaintext listener "outbound" → cluster "mesh" over mTLS."""
    mesh = cluster("mesh", inbound_port)
    mesh["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": UPSTREAM,
            "common_tls_context": _common(leaf, curves or ["X25519MLKEM768"], expect),
        },
    }
    return bootstrap([http_listener([route("/", "mesh")], name="outbound", access_log=str(log))], [mesh])


@contextlib.asynccontextmanager
async def mesh(
    app_port: int, log: pathlib.Path, *, client: Any = None, server: Any = None, **kw: Any
) -> AsyncIterator[tuple[Proxy, Proxy]]:
    server = server or make_leaf(make_ca(), SERVER_ID)
    client = client or make_leaf(make_ca(), CLIENT_ID)
    async with running_proxy(inbound(app_port, server, **kw.get("inbound", {}))) as b:
        doc = outbound(b.port("inbound"), client, log, **kw.get("outbound", {}))
        async with running_proxy(doc) as a:
            yield a, b


async def test_request_crosses_the_mesh_over_x25519mlkem768(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "a.log"
    async with aiohttp_upstream("app") as app, mesh(app, log) as (a, b):
        async with httpx.AsyncClient() as client:
            responses = [await client.get(a.url("/echo/hi", "outbound")) for _ in range(3)]
        assert [r.status_code for r in responses] == [200] * 3
        seen = dict(body_json(responses[0].content)["headers"])  # type: ignore[arg-type]
        xfcc = seen["x-forwarded-client-cert"]
        assert f"By={SERVER_ID}" in xfcc and f"URI={CLIENT_ID}" in xfcc and "Hash=" in xfcc
        groups = b.server.store.listener_stats("inbound").ssl_handshakes_by_group
        assert groups == {"X25519MLKEM768": 1}, "three requests, one pooled mTLS connection"
        assert a.cluster_stats("mesh").upstream_cx_total == 1
        # A's side of the same handshake: its cluster counts the group and B's signature.
        upstream = a.cluster_stats("mesh")
        assert upstream.ssl_handshake == 1
        assert upstream.ssl_handshakes_by_group == {"X25519MLKEM768": 1}
        assert upstream.ssl_handshakes_by_sigalg == {"ecdsa_secp256r1_sha256": 1}
        assert b.server.store.listener_stats("inbound").ssl_handshakes_by_sigalg == {
            "ecdsa_secp256r1_sha256": 1
        }
    (record, *_) = read_access_log(log)
    assert record["response_code"] == 200


async def test_inbound_access_log_names_the_peer_and_the_group(tmp_path: pathlib.Path) -> None:
    server = make_leaf(make_ca(), SERVER_ID)
    async with aiohttp_upstream("app") as app:
        doc = inbound(app, server)
        log = tmp_path / "b.log"
        hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": str(log),
                },
            }
        ]
        async with running_proxy(doc) as b:
            client = make_leaf(make_ca(), CLIENT_ID)
            async with (
                running_proxy(outbound(b.port("inbound"), client, tmp_path / "a.log")) as a,
                httpx.AsyncClient() as http,
            ):
                assert (await http.get(a.url("/x", "outbound"))).status_code == 200
    (record,) = read_access_log(log)
    assert record["tls_version"] == "TLSv1.3"
    assert record["tls_group"] == "X25519MLKEM768"
    assert record["peer_identity"] == CLIENT_ID
    assert record["tls_cipher"].startswith("TLS_")


async def _refused(tmp_path: pathlib.Path, reason_part: str, *, at_connect: bool = False, **kw: Any) -> None:
    async with counting_upstream() as (app, heads), mesh(app, tmp_path / "a.log", **kw) as (a, b):
        async with httpx.AsyncClient() as client:
            resp = await client.get(a.url("/", "outbound"))
        assert resp.status_code == 503
        assert heads == [], "nothing may reach the application over a refused link"
        stats = b.server.store.listener_stats("inbound")
        assert stats.ssl_handshake == 0
        reasons = " | ".join(stats.ssl_errors_by_reason)
        assert reason_part in reasons, reasons
        if at_connect:
            # Refused before the client's handshake completes. (A client certificate is checked
            # after the client has finished its TLS 1.3 handshake, so those refusals reach the
            # client as a reset before any response instead: 503 all the same.)
            assert a.cluster_stats("mesh").upstream_cx_connect_fail >= 1


async def test_client_with_another_identity_is_refused(tmp_path: pathlib.Path) -> None:
    intruder = make_leaf(make_ca(), "spiffe://mesh.local/ns/default/sa/intruder")
    await _refused(tmp_path, "identity_not_allowed", client=intruder)


async def test_classical_only_client_is_refused_when_the_hybrid_group_is_required(
    tmp_path: pathlib.Path,
) -> None:
    await _refused(tmp_path, "no_pq_group", at_connect=True, outbound={"curves": ["X25519"]})


async def test_sidecars_of_different_cas_refuse_each_other(tmp_path: pathlib.Path) -> None:
    # The client trusts only its own (other) CA: it refuses the server's certificate with an
    # unknown_ca alert, which the server counts under that reason.
    stranger = make_leaf(make_ca(tag="other"), CLIENT_ID)
    await _refused(tmp_path, "unknown_ca", at_connect=True, client=stranger)


async def test_plaintext_to_the_tls_port_is_refused(tmp_path: pathlib.Path) -> None:
    async with counting_upstream() as (app, heads), mesh(app, tmp_path / "a.log") as (_, b):
        async with httpx.AsyncClient() as client:
            try:
                resp = await client.get(f"http://127.0.0.1:{b.port('inbound')}/")
            except httpx.HTTPError:
                resp = None
        assert resp is None, "a plaintext request must get no HTTP answer from a TLS listener"
        assert heads == []
        stats = b.server.store.listener_stats("inbound")
        assert "plaintext" in " | ".join(stats.ssl_errors_by_reason)


async def test_admin_certs_lists_the_certificates_in_use(tmp_path: pathlib.Path) -> None:
    async with (
        aiohttp_upstream("app") as app,
        mesh(app, tmp_path / "a.log") as (a, b),
        httpx.AsyncClient() as client,
    ):
        inbound_certs = (await client.get(b.admin_url + "/certs")).json()
        outbound_certs = (await client.get(a.admin_url + "/certs")).json()
    (entry,) = inbound_certs
    assert entry["listener"] == "inbound" and entry["pq_policy"] == "required"
    (leaf,) = entry["cert_chain"]
    assert leaf["uri_sans"] == [SERVER_ID]
    assert 0 < leaf["seconds_until_expiration"] <= 24 * 3600 + 60
    (cluster_entry,) = outbound_certs
    assert cluster_entry["cluster"] == "mesh"
    assert cluster_entry["cert_chain"][0]["uri_sans"] == [CLIENT_ID]
    assert cluster_entry["ca_cert"], "the trust anchors are listed too"


async def test_ml_dsa_65_certificates_end_to_end(tmp_path: pathlib.Path) -> None:
    # Post-quantum signatures too: an ML-DSA-65 CA and ML-DSA-65 leaves on both sidecars.
    ca = make_ca(Algorithm.ML_DSA_65)
    server, client = make_leaf(ca, SERVER_ID), make_leaf(ca, CLIENT_ID)
    log = tmp_path / "a.log"
    async with (
        aiohttp_upstream("app") as app,
        mesh(app, log, client=client, server=server) as (a, b),
        httpx.AsyncClient() as http,
    ):
        resp = await http.get(a.url("/echo/pq", "outbound"))
        assert resp.status_code == 200
        assert b.server.store.listener_stats("inbound").ssl_handshakes_by_group == {"X25519MLKEM768": 1}
        xfcc = dict(body_json(resp.content)["headers"])["x-forwarded-client-cert"]  # type: ignore[arg-type]
        assert f"URI={CLIENT_ID}" in xfcc
        # Each side counts the other's ML-DSA-65 signature.
        assert a.cluster_stats("mesh").ssl_handshakes_by_sigalg == {"mldsa65": 1}
        assert b.server.store.listener_stats("inbound").ssl_handshakes_by_sigalg == {"mldsa65": 1}


async def _probe(port: int, files: tuple[pathlib.Path, ...], pq: str) -> tuple[int, str]:
    cert, key, ca = map(str, files)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshproxy", "tls-probe", f"127.0.0.1:{port}",
        "--cert", cert, "--key", key, "--ca", ca, "--pq", pq,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_tls_probe_prints_the_negotiated_parameters_of_a_live_link(tmp_path: pathlib.Path) -> None:
    files = write_leaf(make_leaf(make_ca(), CLIENT_ID), tmp_path)
    async with (
        counting_upstream() as (app, _),
        running_proxy(inbound(app, make_leaf(make_ca(), SERVER_ID))) as b,
    ):
        code, out = await _probe(b.port("inbound"), files, "required")
        assert code == 0, out
        assert "TLSv1.3" in out and "X25519MLKEM768" in out and SERVER_ID in out
        code, out = await _probe(b.port("inbound"), files, "off")
        assert code == 1, out
        assert "refused:" in out


async def test_expired_client_certificate_is_refused(tmp_path: pathlib.Path) -> None:
    now = datetime.now(UTC)
    expired = make_leaf(
        make_ca(), CLIENT_ID, not_before=now - timedelta(days=2), not_after=now - timedelta(days=1)
    )
    await _refused(tmp_path, "expired", client=expired)


async def test_client_certificate_without_a_spiffe_id_is_refused(tmp_path: pathlib.Path) -> None:
    anonymous = make_leaf(make_ca(), CLIENT_ID, uri_sans=[])
    await _refused(tmp_path, "identity_not_allowed", client=anonymous)


async def test_client_without_a_certificate_is_refused(tmp_path: pathlib.Path) -> None:
    server = make_leaf(make_ca(), SERVER_ID)
    async with counting_upstream() as (app, heads), running_proxy(inbound(app, server)) as b:
        doc = outbound(b.port("inbound"), make_leaf(make_ca(), CLIENT_ID), tmp_path / "a.log")
        tls = doc["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
        del tls["common_tls_context"]["tls_certificates"]
        async with running_proxy(doc) as a, httpx.AsyncClient() as client:
            resp = await client.get(a.url("/", "outbound"))
        assert resp.status_code == 503
        assert heads == []
        reasons = b.server.store.listener_stats("inbound").ssl_errors_by_reason
        assert any("certificate" in code for code in reasons), reasons


async def test_routes_can_select_on_the_verified_peer_identity(tmp_path: pathlib.Path) -> None:
    # The caller's SPIFFE ID reaches the route table as x-forwarded-client-cert: a header
    # matcher admits frontend and a catch-all answers 403 for anyone else.
    server = make_leaf(make_ca(), SERVER_ID)
    async with aiohttp_upstream("app") as app:
        doc = inbound(app, server, allow="spiffe://mesh.local/ns/default/sa/")
        tls = doc["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
        tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["matcher"] = {
            "prefix": "spiffe://mesh.local/ns/default/sa/"
        }
        hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["route_config"]["virtual_hosts"][0]["routes"] = [
            {
                "match": {
                    "prefix": "/",
                    "headers": [
                        {"name": "x-forwarded-client-cert", "string_match": {"contains": f"URI={CLIENT_ID}"}}
                    ],
                },
                "route": {"cluster": "app"},
            },
            {"match": {"prefix": "/"}, "direct_response": {"status": 403, "body": {"inline_string": "no\n"}}},
        ]
        async with running_proxy(doc) as b:
            answers = {}
            for who in (CLIENT_ID, "spiffe://mesh.local/ns/default/sa/other"):
                leaf = make_leaf(make_ca(), who)
                a_doc = outbound(b.port("inbound"), leaf, tmp_path / "a.log")
                async with running_proxy(a_doc) as a, httpx.AsyncClient() as http:
                    answers[who] = (await http.get(a.url("/echo", "outbound"))).status_code
    assert answers == {CLIENT_ID: 200, "spiffe://mesh.local/ns/default/sa/other": 403}


async def test_certificates_from_static_sds_secrets(tmp_path: pathlib.Path) -> None:
    # Istio's names: the workload certificate is secret "default", the trust bundle "ROOTCA".
    server = make_leaf(make_ca(), SERVER_ID)
    async with aiohttp_upstream("app") as app:
        doc = inbound(app, server)
        chain = doc["static_resources"]["listeners"][0]["filter_chains"][0]
        common = chain["transport_socket"]["typed_config"]["common_tls_context"]
        doc["static_resources"]["secrets"] = [
            {"name": "default", "tls_certificate": common.pop("tls_certificates")[0]},
            {"name": "ROOTCA", "validation_context": common.pop("validation_context")},
        ]
        common["tls_certificate_sds_secret_configs"] = [{"name": "default"}]
        common["validation_context_sds_secret_config"] = {"name": "ROOTCA"}
        async with running_proxy(doc) as b:
            client = make_leaf(make_ca(), CLIENT_ID)
            a_doc = outbound(b.port("inbound"), client, tmp_path / "a.log")
            async with running_proxy(a_doc) as a, httpx.AsyncClient() as http:
                assert (await http.get(a.url("/echo", "outbound"))).status_code == 200
            assert b.server.store.listener_stats("inbound").ssl_handshakes_by_group == {"X25519MLKEM768": 1}
