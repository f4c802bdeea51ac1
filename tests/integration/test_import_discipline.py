"""What a running proxy imports: only what its configuration uses (issue 14, docs/memory.md).

Each case starts a ``Server`` on a bootstrap in a fresh interpreter (``python -c``, so that
nothing the test runner imported counts), with the listener bound and the admin up, and reads
``sys.modules``: a plaintext HTTP/1.1 proxy loads neither the TLS stack (pyOpenSSL, the
cryptography bindings: about 9 MiB resident) nor aioquic nor gRPC nor aiohttp; the same proxy
with a TLS listener does load the TLS stack, which shows the check can see it, and still no
aioquic. No timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from unit.tls.tls_fixtures import Pki

from meshproxy.identity.certs import certs_to_pem, generate_ca, generate_csr, key_to_pem, sign_csr
from meshproxy.identity.spiffe import SpiffeId
from tests.integration.harness import bootstrap, cluster, http_listener, route
from tests.integration.quic_client import quic_listener

DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TLS_STACK = ("OpenSSL", "cryptography")
QUIC_STACK = ("aioquic", "pylsqpack")  # loaded only for a QUIC listener or cluster (docs/quic.md)
NEVER_FOR_PLAINTEXT = (*TLS_STACK, *QUIC_STACK, "grpc", "aiohttp")

# Runs in the child: start the proxy on the bootstrap in argv[1], print the top-level packages.
CHILD = """
import asyncio, json, sys
from meshproxy.cli import new_event_loop
from meshproxy.config.bootstrap import load_bootstrap
from meshproxy.server import Server

async def main():
    server = Server(load_bootstrap(sys.argv[1]))
    await server.start()
    try:
        assert server.listeners["http"].bound_address()[1] > 0
        print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
    finally:
        await server.close()

new_event_loop().run_until_complete(main())
"""


def loaded_packages(doc: dict[str, Any], workdir: Path) -> set[str]:
    path = workdir / "bootstrap.json"
    path.write_text(json.dumps(doc))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def plaintext_bootstrap() -> dict[str, Any]:
    return bootstrap([http_listener([route()])], [cluster("backend", 9)])


def test_a_plaintext_http1_proxy_loads_no_tls_grpc_or_aiohttp(tmp_path: Path) -> None:
    loaded = loaded_packages(plaintext_bootstrap(), tmp_path)
    assert "meshproxy" in loaded and "httptools" in loaded  # the child ran the proxy
    assert sorted(loaded & set(NEVER_FOR_PLAINTEXT)) == []


def test_a_tls_listener_loads_the_tls_stack(tmp_path: Path) -> None:
    now = datetime.now(UTC) - timedelta(minutes=1)
    ca = generate_ca("mesh.local", now=now, ttl=timedelta(hours=1))
    spiffe = SpiffeId.parse("spiffe://mesh.local/ns/test/sa/server")
    key, csr = generate_csr(spiffe)
    (tmp_path / "cert.pem").write_bytes(certs_to_pem([sign_csr(ca, csr, spiffe, now=now)]))
    (tmp_path / "key.pem").write_bytes(key_to_pem(key))
    doc = plaintext_bootstrap()
    doc["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS,
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(tmp_path / "cert.pem")},
                        "private_key": {"filename": str(tmp_path / "key.pem")},
                    }
                ]
            },
        },
    }
    loaded = loaded_packages(doc, tmp_path)
    assert sorted(loaded & set(TLS_STACK)) == sorted(TLS_STACK)
    assert sorted(loaded & {"grpc", "aiohttp", *QUIC_STACK}) == []


def test_a_quic_listener_loads_aioquic(tmp_path: Path) -> None:
    """The check can see aioquic: a configuration with a QUIC listener loads it."""
    pki = Pki()
    doc = bootstrap(
        [quic_listener(pki.leaf("server"), None, [route()], name="http")], [cluster("backend", 9)]
    )
    loaded = loaded_packages(doc, tmp_path)
    assert sorted(loaded & set(QUIC_STACK)) == sorted(QUIC_STACK)
