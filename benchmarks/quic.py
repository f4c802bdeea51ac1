"""Scenario "quic" (issue 17): the mesh pair over QUIC against the mesh pair over TCP, and handshakes.

The wrk scenario: client → sidecar A (plaintext HTTP/1.1) → PQ mutual TLS → sidecar B → upstream,
with the A→B link over TCP (``meshproxy-pair``, benchmarks/mesh_path.py) or over QUIC / HTTP/3
(``meshproxy-quic-pair``: a ``QuicUpstreamTransport`` cluster with ``http3_protocol_options`` to a
QUIC listener), both with ``ecdh_curves: [X25519MLKEM768]``; saturating req/s, serial p50/p99
added over direct, and the pair's CPU per request. Loss is not injected here: ``tc netem`` on the
shared loopback would slow every process on the machine; tests/e2e/test_quic_netem.py runs loss
and reordering inside network namespaces.

``python -m benchmarks.quic handshakes [--repeat N]``: one connection's handshake, in memory (no
sockets, no event loop), QUIC (aioquic + pqtls) and TLS over TCP (the pyOpenSSL engine), with
X25519MLKEM768 and with X25519: CPU time per handshake (both sides, median of N) and the bytes
each side puts on the wire (QUIC: UDP payloads, Initial padding included; TCP: TLS records).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path as FsPath
from typing import Any

import yaml

from benchmarks import cli, mesh_path, targets
from benchmarks.runner import Path, Scenario, Timing, pairwise, saturating_and_serial
from benchmarks.tls_hop import CLIENT_ID, SERVER_ID, common_tls_context, meshproxy_tls_bootstrap, write_certs

QUIC_UP = "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport"
QUIC_DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def quic_pair_bootstraps(
    port_a: int, port_b: int, upstream_port: int, admins: tuple[int, int], certs: dict[str, FsPath]
) -> tuple[str, str]:
    """Sidecar A (plaintext in, HTTP/3 out) and sidecar B (QUIC listener in, plaintext out)."""
    curves = ["X25519MLKEM768"]
    client = common_tls_context(certs["client_cert"], certs["client_key"], curves, certs["ca"], SERVER_ID)
    server = common_tls_context(certs["server_cert"], certs["server_key"], curves, certs["ca"], CLIENT_ID)
    a = yaml.safe_load(meshproxy_tls_bootstrap(port_a, port_b, admins[0]))
    upstream = a["static_resources"]["clusters"][0]
    upstream["transport_socket"] = {
        "name": "envoy.transport_sockets.quic",
        "typed_config": {"@type": QUIC_UP, "upstream_tls_context": {"common_tls_context": client}},
    }
    upstream["typed_extension_protocol_options"] = {
        HTTP_OPTIONS: {
            "@type": "type.googleapis.com/" + HTTP_OPTIONS,
            "explicit_http_config": {"http3_protocol_options": {}},
        }
    }
    b = yaml.safe_load(meshproxy_tls_bootstrap(port_b, upstream_port, admins[1]))
    listener = b["static_resources"]["listeners"][0]
    listener["address"]["socket_address"]["protocol"] = "UDP"
    listener["udp_listener_config"] = {"quic_options": {}}
    chain = listener["filter_chains"][0]
    chain["filters"][0]["typed_config"]["codec_type"] = "HTTP3"
    chain["transport_socket"] = {
        "name": "envoy.transport_sockets.quic",
        "typed_config": {
            "@type": QUIC_DOWN,
            "downstream_tls_context": {"common_tls_context": server, "require_client_certificate": True},
        },
    }
    return yaml.safe_dump(a, sort_keys=False), yaml.safe_dump(b, sort_keys=False)


def _quic_pair(upstream_port: int, workdir: FsPath) -> tuple[list[list[str]], int, Any]:
    certs = write_certs(workdir)
    port_a, port_b = targets.free_port(), targets.free_port()
    admins = (targets.free_port(), targets.free_port())
    argvs = []
    for name, doc in zip(
        "ab", quic_pair_bootstraps(port_a, port_b, upstream_port, admins, certs), strict=True
    ):
        conf = workdir / f"sidecar-{name}.yaml"
        conf.write_text(doc)
        argvs.append([sys.executable, "-m", "meshproxy", "run", "-c", str(conf)])

    def ready() -> bool:
        return all(targets.http_ok(p, "/ready") for p in admins) and targets.http_ok(port_a, "/")

    return argvs, port_a, ready


targets.register("meshproxy-quic-pair", _quic_pair)

_PAIRS = ("meshproxy-quic-pair", "meshproxy-pair")
SCENARIO = Scenario(
    name="quic",
    title="Scenario: the mesh pair over QUIC (HTTP/3) vs over TCP (HTTP/1.1), PQ mutual TLS (64 B)",
    paths=tuple(Path(t, t) for t in ("direct", *_PAIRS)),
    measurements=(*saturating_and_serial(mesh_path.CONNECTIONS),),
    comparisons=pairwise(
        [("meshproxy-quic-pair", "meshproxy-pair")],
        (
            ("saturating req/s", "saturate", "rps"),
            ("serial p50", "serial", "p50_ms"),
            ("pair CPU µs/req (saturating)", "saturate", "proxy_cpu_us_per_req"),
        ),
    )
    + pairwise(
        [(p, "direct") for p in _PAIRS],
        (("serial p50", "serial", "p50_ms"), ("serial p99", "serial", "p99_ms")),
        kind="diff",
    ),
    quick=Timing(rounds=1, duration_s=2),
    full=Timing(rounds=5, duration_s=10),
    note=(
        "Both pairs keep their sidecar-to-sidecar connections alive and pooled. Over QUIC every packet "
        "is encrypted, framed, acknowledged and paced in Python (aioquic), where the TCP pair hands "
        "TLS records to OpenSSL and segmentation, ACKs and congestion control to the kernel: QUIC in "
        "Python costs more CPU per request. No loss is injected (see the module docstring)."
    ),
    filter_targets=False,
)


# ----------------------------------------------------------------------------- handshakes


def _quic_handshake(policy: Any, pki: Any) -> tuple[float, int, int]:
    from unit.quic.quic_fixtures import Pair, client_connection

    server = pki.config(pki.leaf("server"), server_side=True, alpn=("h3",), pq_policy=policy)
    client = pki.config(pki.leaf("client"), server_side=False, alpn=("h3",), pq_policy=policy)
    start = time.process_time()
    pair = Pair(server, client_connection(client)).pump(horizon=0.5)
    elapsed = time.process_time() - start
    assert pair.completed("client") and pair.completed("server")
    return elapsed, pair.wire_bytes["client"], pair.wire_bytes["server"]


def _tcp_handshake(policy: Any, pki: Any) -> tuple[float, int, int]:
    from unit.tls.tls_fixtures import Link

    from meshproxy.tls import TlsContext

    server = TlsContext(pki.config(pki.leaf("server"), server_side=True, pq_policy=policy))
    client = TlsContext(pki.config(pki.leaf("client"), server_side=False, pq_policy=policy))
    start = time.process_time()
    link = Link(server, client).pump()
    elapsed = time.process_time() - start
    assert link.established
    return elapsed, sum(map(len, link.wire["client"])), sum(map(len, link.wire["server"]))


def handshakes(repeat: int) -> str:
    sys.path.insert(0, str(FsPath(__file__).resolve().parent.parent / "tests"))
    from unit.tls.tls_fixtures import Pki

    from meshproxy.tls import REQUIRED
    from meshproxy.tls.policy import PqMode, PqPolicy

    x25519 = PqPolicy(PqMode.OFF, ("X25519",))  # X25519 alone ("off" offers a P-256 share too)
    pki = Pki()
    rows = [
        "| link | group | CPU ms / handshake (both sides) | client bytes | server bytes |",
        "|---|---|---|---|---|",
    ]
    for link, run in (("QUIC (aioquic)", _quic_handshake), ("TLS over TCP (OpenSSL)", _tcp_handshake)):
        for name, policy in (("X25519MLKEM768", REQUIRED), ("X25519", x25519)):
            results = [run(policy, pki) for _ in range(repeat)]
            cpu = statistics.median(r[0] for r in results) * 1000
            rows.append(f"| {link} | {name} | {cpu:.2f} | {results[0][1]} | {results[0][2]} |")
    machine = f"Python {platform.python_version()}, {platform.machine()}, median of {repeat}"
    return "\n".join([*rows, "", f"{machine}; mutual TLS, ECDSA P-256 certificates"])


if __name__ == "__main__":
    if sys.argv[1:2] == ["handshakes"]:
        parser = argparse.ArgumentParser(prog="python -m benchmarks.quic handshakes")
        parser.add_argument("--repeat", type=int, default=20)
        print(handshakes(parser.parse_args(sys.argv[2:]).repeat))
        sys.exit(0)
    sys.exit(cli.main(sys.argv[1:], ["quic"]))
