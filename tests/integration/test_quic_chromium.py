"""Interoperability with an independent QUIC and TLS stack: headless Chromium fetching over HTTP/3.

Chromium's QUIC (QUICHE) and TLS (BoringSSL) are Google's, and it offers X25519MLKEM768 by
default. The listener here accepts only X25519MLKEM768 (``ecdh_curves``), and aioquic has no
HelloRetryRequest, so a completed page load is itself evidence that Chromium sent a hybrid key
share; the group is also asserted from the proxy's side (counters and access log). Chromium is
forced onto QUIC for the origin (``--origin-to-force-quic-on``) and trusts the test certificate
by its key (``--ignore-certificate-errors-spki-list``). Debian's ``chromium`` package: ``make
debs`` installs it (Makefile ``DEBS``); ``MESHPROXY_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from unit.tls.tls_fixtures import Pki

from .harness import bootstrap, cluster, read_access_log, route, running_proxy
from .quic_client import quic_listener
from .upstreams import aiohttp_upstream


def chromium() -> str:
    found = os.environ.get("MESHPROXY_CHROMIUM") or shutil.which("chromium")
    assert found, "Chromium not found: `make debs` installs Debian's chromium (or set MESHPROXY_CHROMIUM)"
    return found


def spki_hash(chain_pem: bytes) -> str:
    key = x509.load_pem_x509_certificate(chain_pem).public_key()
    return base64.b64encode(
        hashlib.sha256(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()
    ).decode()


async def test_chromium_fetches_over_http3_with_x25519mlkem768(tmp_path: Path) -> None:
    pki = Pki()
    leaf = pki.leaf("server")
    log = tmp_path / "access.log"
    listener = quic_listener(leaf, None, [route()], access_log=str(log), ecdh_curves=("X25519MLKEM768",))
    async with (
        aiohttp_upstream("app") as port,
        running_proxy(bootstrap([listener], [cluster("backend", port)])) as proxy,
    ):
        origin = f"localhost:{proxy.port('h3')}"
        proc = await asyncio.create_subprocess_exec(
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP localhost 127.0.0.1",  # the listener is IPv4
            f"--origin-to-force-quic-on={origin}",
            f"--ignore-certificate-errors-spki-list={spki_hash(leaf.chain)}",
            "--dump-dom", f"https://{origin}/from-chromium?q=1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        dom = out.decode()
        assert proc.returncode == 0 and '"server": "app"' in dom, err.decode()[-2000:]
        start = dom.index("{")
        seen = json.loads(dom[start : dom.rindex("}") + 1])
        assert seen["path"] == "/from-chromium?q=1"
        assert "HeadlessChrome" in dict(seen["headers"])["user-agent"]
        stats = proxy.listener_stats("h3")
        assert stats.ssl_handshakes_by_group == {"X25519MLKEM768": stats.ssl_handshake}
        assert stats.ssl_handshake >= 1 and stats.ssl_connection_error == 0
    records = [r for r in read_access_log(log) if r["path"] == "/from-chromium?q=1"]
    assert [(r["protocol"], r["response_code"], r["tls_group"], r["tls_version"]) for r in records] == [
        ("HTTP/3", 200, "X25519MLKEM768", "TLSv1.3")
    ]
