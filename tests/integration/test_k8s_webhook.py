"""The injection webhook over real HTTPS, fed AdmissionReviews shaped as the API server sends them.

The client side is the stdlib's ``ssl`` (another OpenSSL build than meshproxy's engine), dialling
the Service's DNS name as the API server does and verifying it against the CA the
MutatingWebhookConfiguration's ``caBundle`` carries. One test runs the real ``controlplane
serve --webhook-address``; one compares the webhook's pod with ``meshctl inject``'s, run as a
program.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from certs import make_ca
from k8s_workloads import DEPLOYMENT, admission_review, api_server_pod

from controlplane import serving_tls
from controlplane.ca_service import utc_now
from controlplane.k8s import annotations as names
from controlplane.k8s import validate
from controlplane.k8s.sidecar import Target
from controlplane.k8s.webhook_server import MAX_BODY, WebhookServer
from meshproxy.tls.config import TlsConfig
from meshproxy.tls.context import TlsContext
from meshproxy.tls.policy import REQUIRED
from meshproxy.tls.transport import connect_tls

REPO = Path(__file__).resolve().parents[2]
HOST = names.controlplane_host()
CA = make_ca()
TARGET = Target(CA.cert_pem.decode())


@pytest.fixture
async def webhook() -> AsyncIterator[int]:
    hosts = serving_tls.parse_sans([HOST])
    serving = serving_tls.ServingCertificate(CA.ca, hosts, ttl=timedelta(hours=1), now=utc_now())
    server = WebhookServer(TARGET, serving, utc_now)
    port = await server.start("127.0.0.1", 0)
    yield port
    await server.close()


class Client:
    """One HTTP/1.1 connection over stdlib TLS, as the API server's webhook client keeps one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, server_hostname: str = HOST, ca: bytes = CA.cert_pem) -> Client:
        ctx = ssl.create_default_context(cadata=ca.decode())
        ctx.set_alpn_protocols(["http/1.1"])
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname=server_hostname
        )
        return cls(reader, writer)

    async def send(self, body: bytes, *, method: str = "POST", path: str = "/inject", head: str = "") -> None:
        head = head or f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        self.writer.write(
            f"{method} {path}?timeout=10s HTTP/1.1\r\nhost: {HOST}:443\r\n{head}\r\n".encode() + body
        )
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(10):
            status_line = await self.reader.readline()
            headers = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def review(self, review: dict[str, Any]) -> dict[str, Any]:
        await self.send(json.dumps(review).encode())
        status, headers, body = await self.answer()
        assert status == 200 and headers["content-type"] == "application/json"
        answer: dict[str, Any] = json.loads(body)
        assert answer["response"]["uid"] == review["request"]["uid"]
        assert answer["response"]["allowed"] is True
        return answer["response"]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def _pod() -> dict[str, Any]:
    return api_server_pod(json.loads(json.dumps(DEPLOYMENT["spec"]["template"])), "shop")


def _apply(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["patchType"] == "JSONPatch"
    return jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))  # type: ignore[no-any-return]


async def test_create_update_dry_run_and_injected_pods_on_one_kept_alive_connection(webhook: int) -> None:
    client = await Client.connect(webhook)
    pod = _pod()
    created = await client.review(admission_review(pod))
    injected = _apply(pod, created)
    assert [c["name"] for c in injected["spec"]["initContainers"]] == ["meshproxy-init", "meshproxy"]
    assert validate.problems([injected]) == []
    dry = await client.review(admission_review(pod, dry_run=True))
    assert dry["patch"] == created["patch"]
    named = dict(injected, metadata=dict(injected["metadata"], name="web-5d8f7c9b4-q8xzl"))
    updated = await client.review(admission_review(named, operation="UPDATE", old=named))
    assert set(updated) == {"uid", "allowed"}
    again = await client.review(admission_review(injected))
    assert set(again) == {"uid", "allowed"}
    await client.close()


async def test_a_pod_it_cannot_inject_is_admitted_with_a_warning(webhook: int) -> None:
    client = await Client.connect(webhook)
    pod = _pod()
    pod["spec"]["hostNetwork"] = True
    response = await client.review(admission_review(pod))
    assert "patch" not in response
    assert response["warnings"] == [
        "pod shop/web-5d8f7c9b4-*: not injected: spec.hostNetwork: the pod uses the node's network; "
        "capturing it would capture the node's"
    ]
    await client.close()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "the body is not JSON"),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}).encode(),
            "not an",
        ),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
            "no request.uid",
        ),
    ],
)
async def test_a_malformed_review_is_a_400_and_the_connection_serves_on(
    webhook: int, body: bytes, reason: str
) -> None:
    client = await Client.connect(webhook)
    await client.send(body)
    status, _, answer = await client.answer()
    assert status == 400 and reason in json.loads(answer)["error"]
    assert "patch" in await client.review(admission_review(_pod()))
    await client.close()


@pytest.mark.parametrize(
    ("method", "path", "head", "status"),
    [
        ("GET", "/inject", "content-length: 0\r\n", 405),
        ("POST", "/mutate", "content-length: 2\r\n", 404),
        ("POST", "/inject", "transfer-encoding: chunked\r\n", 411),
        ("POST", "/inject", f"content-length: {MAX_BODY + 1}\r\n", 413),
    ],
)
async def test_requests_it_does_not_serve(
    webhook: int, method: str, path: str, head: str, status: int
) -> None:
    client = await Client.connect(webhook)
    await client.send(b"{}" if "content-length: 2" in head else b"", method=method, path=path, head=head)
    got, headers, _ = await client.answer()
    assert got == status
    if status in (411, 413):  # the body cannot be skipped: the connection ends
        assert headers["connection"] == "close"
        assert await client.reader.read() == b""
    await client.close()


async def test_the_certificate_names_the_service_and_is_refused_under_another_ca(webhook: int) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await Client.connect(webhook, server_hostname="evil.example")
    with pytest.raises(ssl.SSLCertVerificationError):
        await Client.connect(webhook, ca=make_ca(tag="other").cert_pem)


async def test_an_api_server_offering_the_hybrid_group_gets_x25519mlkem768(webhook: int) -> None:
    cfg = TlsConfig(
        server_side=False, trusted_ca=CA.cert_pem, pq_policy=REQUIRED, sni=HOST, alpn=("http/1.1",)
    )
    loop = asyncio.get_running_loop()
    transport, _ = await connect_tls(loop, "127.0.0.1", webhook, TlsContext(cfg), asyncio.Protocol)
    negotiated = transport.get_extra_info("tls")
    assert (negotiated.group, negotiated.alpn, negotiated.version) == (
        "X25519MLKEM768",
        "http/1.1",
        "TLSv1.3",
    )
    transport.close()


async def _run(*argv: str, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out, err


def _volumes_by_name(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod with its volumes sorted by name: the API server appends its token volume after the
    injected ones in one case and before them in the other; a pod's volumes are a set."""
    return dict(pod, spec=dict(pod["spec"], volumes=sorted(pod["spec"]["volumes"], key=lambda v: v["name"])))


async def test_the_webhook_and_meshctl_inject_make_the_same_pod(webhook: int, tmp_path: Path) -> None:
    trust = tmp_path / "ca.pem"
    trust.write_bytes(CA.cert_pem)
    meshctl = [sys.executable, "-m", "controlplane.meshctl", "--state-dir", str(tmp_path)]
    code, out, err = await _run(
        *meshctl,
        "inject",
        "-f",
        "-",
        "--namespace",
        "shop",
        "--trust-bundle",
        str(trust),
        stdin=yaml.safe_dump(DEPLOYMENT).encode(),
    )
    assert (code, err) == (0, b"")
    offline = api_server_pod(yaml.safe_load(out)["spec"]["template"], "shop")
    client = await Client.connect(webhook)
    pod = _pod()
    from_webhook = _apply(pod, await client.review(admission_review(pod)))
    await client.close()
    assert _volumes_by_name(from_webhook) == _volumes_by_name(offline)


async def test_controlplane_serve_runs_the_webhook(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "controlplane", "serve", "--state-dir", str(tmp_path / "state")]
    argv += ["--xds-address", "127.0.0.1:0", "--xds-tls-address", "off", "--xds-tls-san", HOST]
    argv += ["--webhook-address", "127.0.0.1:0", "--webhook-image", "registry.example/meshproxy:2"]
    argv += ["--kube-version", "1.28"]
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while b"injection webhook" not in (line := await proc.stdout.readline()):
                assert line, (await proc.stderr.read()).decode() if proc.stderr else "exited"
        assert line.startswith(b"controlplane: serving the injection webhook on 127.0.0.1:")
        port = int(line.rsplit(b":", 1)[1])
        ca_pem = (tmp_path / "state" / "ca" / "ca.crt").read_bytes()
        client = await Client.connect(port, ca=ca_pem)
        pod = _pod()
        injected = _apply(pod, await client.review(admission_review(pod)))
        await client.close()
    finally:
        proc.terminate()
        await proc.wait()
    sidecar = injected["spec"]["containers"][0]  # 1.28: a regular first container
    assert (sidecar["name"], sidecar["image"]) == ("meshproxy", "registry.example/meshproxy:2")
    assert injected["metadata"]["annotations"][names.TRUST_BUNDLE] == ca_pem.decode()
    assert f"{HOST}:15012" in sidecar["args"]
