"""Two sidecars over QUIC between network namespaces, with packet loss in the kernel.

Pod ``a`` holds the client and sidecar A (HTTP/1.1 in on 127.0.0.1, an HTTP/3 cluster out); pod
``b`` holds sidecar B (a QUIC listener on its pod address, PQ mTLS, X25519MLKEM768 only) and the
application (``python -m http.server`` serving a file). Each pod drops 3 % of the UDP datagrams
it sends (``iptables -m statistic --mode random``: this kernel is built without ``sch_netem``, so
``tc netem`` is not available; reordering is injected by tests/integration/test_quic_impaired.py's
relay instead), so QUIC's loss recovery runs both ways, handshake included; every request must
still come back whole. Root only (tests/e2e/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from integration.harness import bootstrap, cluster, http_listener, route
from integration.quic_client import quic_listener
from integration.test_quic_mesh import REQUIRED, quic_cluster
from unit.tls.tls_fixtures import Pki, spiffe_id

from controlplane.demo.pods import COMMAND_TIMEOUT, Pod, Pods

APP_PORT = 8080
QUIC_PORT = 15006
OUT_PORT = 15001
ADMIN = 15000
DROP = ("-p", "udp", "-m", "statistic", "--mode", "random", "--probability", "0.03", "-j", "DROP")
REQUESTS = 30
FETCH = """
import hashlib, json, sys, urllib.request
digests = []
for i in range(int(sys.argv[2])):
    with urllib.request.urlopen(sys.argv[1], timeout=20) as r:
        digests.append(hashlib.sha256(r.read()).hexdigest())
print(json.dumps(digests))
"""


def _start(pod: Pod, doc: dict[str, Any], path: Path) -> None:
    doc["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ADMIN}}}
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.Popen(
        pod.argv([sys.executable, "-m", "meshproxy", "run", "-c", str(path)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pod.processes.append(proc)
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while pod.run(
        "python3",
        "-c",
        f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{ADMIN}/ready')",
        check=False,
    ).returncode:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, f"sidecar in {pod.name} not ready"
        time.sleep(0.2)


def test_quic_link_survives_packet_loss_in_the_kernel(pods: Pods, tmp_path: Path) -> None:
    pki = Pki()
    a, b = pods.add("a"), pods.add("b")
    site = tmp_path / "site"
    site.mkdir()
    payload = bytes(range(256)) * 800  # 200 KiB: many packets each way
    (site / "blob").write_bytes(payload)
    app = subprocess.Popen(
        b.argv([sys.executable, "-m", "http.server", str(APP_PORT), "--bind", "127.0.0.1", "-d", str(site)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    b.processes.append(app)  # type: ignore[arg-type]
    inbound = quic_listener(
        pki.leaf("b"), pki.ca_pem, [route("/", "app")], name="inbound", ecdh_curves=REQUIRED
    )
    inbound["address"]["socket_address"].update(address=b.ipv4, port_value=QUIC_PORT)
    validation = inbound["filter_chains"][0]["transport_socket"]["typed_config"]["downstream_tls_context"]
    validation["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] = [
        {"san_type": "URI", "matcher": {"exact": spiffe_id("a")}}
    ]
    _start(b, bootstrap([inbound], [cluster("app", APP_PORT)], admin=False), tmp_path / "b.yaml")
    outbound = http_listener([route("/", "b")], name="outbound")
    outbound["address"]["socket_address"]["port_value"] = OUT_PORT
    mesh = quic_cluster("b", QUIC_PORT, pki.leaf("a"), pki.ca_pem, expect=spiffe_id("b"))
    mesh["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
        "address"
    ] = b.ipv4
    mesh["connect_timeout"] = "15s"  # a handshake through 3 % loss on a loaded machine
    _start(a, bootstrap([outbound], [mesh], admin=False), tmp_path / "a.yaml")
    for pod in (a, b):
        pod.run("iptables", "-A", "OUTPUT", "-o", "eth0", *DROP)
    fetched = a.run(sys.executable, "-c", FETCH, f"http://127.0.0.1:{OUT_PORT}/blob", str(REQUESTS))
    digests = json.loads(fetched.stdout)
    assert digests == [hashlib.sha256(payload).hexdigest()] * REQUESTS
    admin = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{ADMIN}/stats?format=flat').read().decode())"
    stats = json.loads(a.run("python3", "-c", admin).stdout)
    assert stats["cluster.b.upstream_cx_http3_total"] == 1  # one connection carried every request
    assert stats["cluster.b.ssl_handshakes_by_group"] == {"X25519MLKEM768": 1}
    for pod in (a, b):  # the rule really dropped datagrams, both ways
        rules = pod.run("iptables", "-L", "OUTPUT", "-v", "-x", "-n").stdout.splitlines()
        dropped = next(int(line.split()[0]) for line in rules if "statistic" in line)
        assert dropped > 0, f"nothing dropped in pod {pod.name}"
