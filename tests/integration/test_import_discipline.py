"""What a running proxy imports: only what its configuration uses (issue 14, docs/memory.md).

Each case starts a ``Server`` on a bootstrap in a fresh interpreter (``python -c``, so that
nothing the test runner imported counts), with the listener bound and the admin up, and reads
``sys.modules``: a plaintext HTTP/1.1 proxy loads neither the TLS stack (pyOpenSSL, the
cryptography bindings: about 9 MiB resident) nor gRPC nor aiohttp, nor prometheus-client before
a scrape (4.3 MiB) nor RE2 without a ``safe_regex`` (1.5 MiB); the same proxy with a TLS
listener does load the TLS stack, a regex route loads RE2 and a scrape loads prometheus-client,
which shows the check can see each. No timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from meshproxy.identity.certs import certs_to_pem, generate_ca, generate_csr, key_to_pem, sign_csr
from meshproxy.identity.spiffe import SpiffeId
from tests.integration.harness import bootstrap, cluster, http_listener, route

DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TLS_STACK = ("OpenSSL", "cryptography")
NEVER_FOR_PLAINTEXT = (*TLS_STACK, "grpc", "aiohttp", "prometheus_client", "re2")

# Runs in the child: start the proxy on the bootstrap in argv[1], print the top-level packages.
CHILD = """
import asyncio, json, sys, urllib.request
from meshproxy.cli import new_event_loop
from meshproxy.config.bootstrap import load_bootstrap
from meshproxy.server import Server

async def main():
    server = Server(load_bootstrap(sys.argv[1]))
    await server.start()
    try:
        assert server.listeners["http"].bound_address()[1] > 0
        print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
        if len(sys.argv) > 2:  # then scrape, off the loop, and list again
            url = "http://%s:%d/stats/prometheus" % server.admin.address()
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
            assert b"# TYPE" in body
            print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
    finally:
        await server.close()

new_event_loop().run_until_complete(main())
"""


def loaded_packages(doc: dict[str, Any], workdir: Path, *, scrape: bool = False) -> list[set[str]]:
    """The packages loaded once the proxy runs (and, with ``scrape``, after one scrape)."""
    path = workdir / "bootstrap.json"
    path.write_text(json.dumps(doc))
    argv = [sys.executable, "-c", CHILD, str(path), *(["scrape"] if scrape else [])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [set(json.loads(line)) for line in done.stdout.splitlines() if line.startswith("[")]


def plaintext_bootstrap() -> dict[str, Any]:
    return bootstrap([http_listener([route()])], [cluster("backend", 9)])


def test_a_plaintext_http1_proxy_loads_no_tls_grpc_prometheus_or_re2(tmp_path: Path) -> None:
    loaded, scraped = loaded_packages(plaintext_bootstrap(), tmp_path, scrape=True)
    assert "meshproxy" in loaded and "httptools" in loaded  # the child ran the proxy
    assert sorted(loaded & set(NEVER_FOR_PLAINTEXT)) == []
    assert "prometheus_client" in scraped - loaded  # the first scrape loads it


def test_a_regex_route_loads_re2(tmp_path: Path) -> None:
    regex_route = {"match": {"safe_regex": {"regex": "/a.*"}}, "route": {"cluster": "backend"}}
    doc = bootstrap([http_listener([regex_route])], [cluster("backend", 9)])
    (loaded,) = loaded_packages(doc, tmp_path)
    assert "re2" in loaded and "prometheus_client" not in loaded


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
    (loaded,) = loaded_packages(doc, tmp_path)
    assert sorted(loaded & set(TLS_STACK)) == sorted(TLS_STACK)
    assert "grpc" not in loaded and "aiohttp" not in loaded
