"""An HTTP/3 listener on UDP in front of real upstreams: the HCM over QUIC, with PQ mTLS and evidence."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from unit.tls.tls_fixtures import Pki, spiffe_id

from meshproxy.quic.listener import QuicListenerRuntime
from meshproxy.tls import OFF

from .harness import bootstrap, cluster, eventually, read_access_log, route, running_proxy
from .quic_client import H3Client, connect, negotiated, quic_listener, refused
from .upstreams import aiohttp_upstream

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def client_config(pki: Pki, name: str | None = "client", **fields: Any) -> Any:
    return pki.config(pki.leaf(name) if name else None, server_side=False, alpn=("h3",), **fields)


async def test_http3_request_reaches_an_http1_upstream_over_pq_mtls(pki: Pki, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with aiohttp_upstream("up") as port:
        doc = bootstrap(
            [quic_listener(pki.leaf("server"), pki.ca_pem, [route()], access_log=str(log))],
            [cluster("backend", port)],
        )
        async with running_proxy(doc) as proxy:
            client: H3Client = await connect(proxy.port("h3"), client_config(pki))
            try:
                got = await client.request("GET", "/hello?x=1")
                body = b"x" * 200_000
                posted = await client.request(
                    "POST", "/upload", [(b"content-type", b"application/octet-stream")], body
                )
            finally:
                client.close()
            assert got.status == 200
            echoed = json.loads(got.body)
            assert echoed["path"] == "/hello?x=1" and echoed["server"] == "up"
            xfcc = dict(echoed["headers"])["x-forwarded-client-cert"]
            assert f"URI={spiffe_id('client')}" in xfcc
            assert json.loads(posted.body) == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
            ours = negotiated(client)
            assert ours.group == "X25519MLKEM768" and ours.peer_uris == (spiffe_id("server"),)
            listener = proxy.listener_stats("h3")
            assert listener.ssl_handshakes_by_group == {"X25519MLKEM768": 1}
            assert listener.ssl_handshakes_by_sigalg == {"ecdsa_secp256r1_sha256": 1}
            await eventually(lambda: proxy.http_stats("h3").downstream_cx_http3_active == 0, what="closed")
            assert proxy.http_stats("h3").downstream_cx_http3_total == 1
        records = read_access_log(log)
    assert [(r["protocol"], r["method"], r["response_code"]) for r in records] == [
        ("HTTP/3", "GET", 200),
        ("HTTP/3", "POST", 200),
    ]
    assert {(r["tls_group"], r["tls_version"], r["peer_identity"]) for r in records} == {
        ("X25519MLKEM768", "TLSv1.3", spiffe_id("client"))
    }
    assert records[0]["tls_cipher"].startswith("TLS_AES_")


async def test_no_route_is_a_local_reply_over_http3(pki: Pki) -> None:
    doc = bootstrap(
        [quic_listener(pki.leaf("server"), pki.ca_pem, [route("/only")])], [cluster("backend", 9)]
    )
    async with running_proxy(doc) as proxy:
        client = await connect(proxy.port("h3"), client_config(pki))
        try:
            response = await client.request("GET", "/elsewhere")
        finally:
            client.close()
    assert response.status == 404


@pytest.mark.parametrize(
    ("client", "alert", "code"),
    [
        ("no-certificate", 116, "no_client_certificate"),
        ("classical-only", 40, "no_shared_group"),
        ("unknown-ca", 42, "bad_certificate"),
    ],
)
async def test_refused_clients_are_told_and_counted_by_reason(
    pki: Pki, client: str, alert: int, code: str
) -> None:
    """Refused by the proxy: the client gets the TLS alert (CONNECTION_CLOSE 0x100 + alert). A client
    that sent its certificate has finished its side of the handshake before the proxy checks it."""
    listener = quic_listener(pki.leaf("server"), pki.ca_pem, [route()], ecdh_curves=("X25519MLKEM768",))
    doc = bootstrap([listener], [cluster("backend", 9)])
    if client == "unknown-ca":
        stranger = Pki("another CA")
        cfg = stranger.config(stranger.leaf("client"), server_side=False, alpn=("h3",), trusted_ca=pki.ca_pem)
    elif client == "classical-only":
        cfg = client_config(pki, pq_policy=OFF)
    else:
        cfg = client_config(pki, None, require_client_certificate=False)
    async with running_proxy(doc) as proxy:
        ended = await refused(proxy.port("h3"), cfg)
        assert ended.error_code == 0x100 + alert
        stats = proxy.listener_stats("h3")
        await eventually(lambda: stats.ssl_errors_by_reason.get(code) == 1, what=f"{code} counted")
        assert stats.ssl_handshake == 0 and stats.downstream_pre_cx_active == 0


async def test_clients_must_prove_their_address_under_load(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the threshold of handshakes in progress, a new client gets a Retry first (and copes)."""
    monkeypatch.setattr(QuicListenerRuntime, "retry_threshold", 0)
    async with aiohttp_upstream("up") as port:
        doc = bootstrap(
            [quic_listener(pki.leaf("server"), pki.ca_pem, [route()])], [cluster("backend", port)]
        )
        async with running_proxy(doc) as proxy:
            client = await connect(proxy.port("h3"), client_config(pki))
            try:
                response = await client.request("GET", "/")
            finally:
                client.close()
            assert response.status == 200
            # One Retry per token-less Initial datagram: a hybrid ClientHello spans two.
            assert proxy.listener_stats("h3").quic_retry_sent >= 1


async def _probe(port: int, *flags: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshproxy", "tls-probe", "--quic", f"127.0.0.1:{port}", *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_tls_probe_over_quic_prints_the_link_and_its_refusals(pki: Pki, tmp_path: Path) -> None:
    leaf = pki.leaf("client")
    files = [tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"]
    for path, data in zip(files, (leaf.chain, leaf.key, pki.ca_pem), strict=True):
        path.write_bytes(data)
    listener = quic_listener(pki.leaf("server"), pki.ca_pem, [route()], ecdh_curves=("X25519MLKEM768",))
    async with running_proxy(bootstrap([listener], [cluster("backend", 9)])) as proxy:
        port = proxy.port("h3")
        mtls = ("--cert", str(files[0]), "--key", str(files[1]), "--ca", str(files[2]))
        code, out = await _probe(port, *mtls, "--pq", "required")
        assert code == 0, out
        assert "(QUIC)" in out and "X25519MLKEM768" in out and spiffe_id("server") in out and "h3" in out
        code, out = await _probe(port, *mtls, "--pq", "off")
        assert code == 1 and "refused: " in out, out
        code, out = await _probe(port, "--ca", str(files[2]), "--pq", "required")  # no certificate
        assert code == 1 and "refused: " in out, out


async def test_drain_sends_goaway_finishes_the_request_in_flight_and_refuses_new_ones(pki: Pki) -> None:
    async with aiohttp_upstream("up") as port:
        doc = bootstrap(
            [quic_listener(pki.leaf("server"), pki.ca_pem, [route()])], [cluster("backend", port)]
        )
        async with running_proxy(doc) as proxy:
            client = await connect(proxy.port("h3"), client_config(pki))
            try:
                slow = asyncio.ensure_future(client.request("GET", "/delay/0.3"))
                listener = proxy.server.listeners["h3"]
                await eventually(lambda: proxy.http_stats("h3").downstream_rq_active == 1, what="in flight")
                drained = asyncio.ensure_future(listener.drain(5.0))
                await eventually(lambda: client.goaway is not None, what="GOAWAY received")
                late = await client.request("GET", "/late")
                assert (await slow).status == 200
                assert late.reset == 0x10B  # H3_REQUEST_REJECTED: not processed, safe to retry
                assert await drained == 0  # nothing was cut
            finally:
                client.close()


async def test_max_connection_duration_drains_the_connection(pki: Pki) -> None:
    protocol = {"max_connection_duration": "1s"}
    doc = bootstrap(
        [
            quic_listener(
                pki.leaf("server"), pki.ca_pem, [route("/", "c")], common_http_protocol_options=protocol
            )
        ],
        [cluster("c", 9)],
    )
    async with running_proxy(doc) as proxy:
        client = await connect(proxy.port("h3"), client_config(pki))
        try:
            await eventually(lambda: client.goaway is not None, timeout=4.0, what="GOAWAY at the duration")
            assert proxy.http_stats("h3").downstream_cx_max_duration_reached == 1
        finally:
            client.close()
