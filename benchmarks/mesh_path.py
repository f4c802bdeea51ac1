"""Scenario 3: the mesh path, client → sidecar A → mutual TLS → sidecar B → upstream.

Sidecar A has a plaintext listener and a cluster towards B with an UpstreamTlsContext (its client
SVID, the CA, an exact URI SAN match on B's SPIFFE ID); B has a DownstreamTlsContext requiring a
client certificate from the same CA with an exact URI SAN match on A's ID, and forwards plaintext
to the upstream. Paths: direct; a meshproxy pair with ``ecdh_curves: [X25519MLKEM768]``; the same
pair with ``[X25519]``; and a haproxy pair with mutual TLS (``ssl crt ... ca-file ... verify
required`` on both sides; haproxy checks the chain only, not the SPIFFE URI SAN). Both sidecars of
a pair run on the proxy core as children of one ``sh`` (targets.group_argv), so the proxy CPU per
request is the pair's. wrk (plaintext) and the upstream share the load core.
"""

from __future__ import annotations

import sys
from pathlib import Path as FsPath
from typing import Any

from benchmarks import cli, targets
from benchmarks.runner import (
    Path,
    Scenario,
    Timing,
    pairwise,
    saturating_and_serial,
)
from benchmarks.tls_hop import (
    CLIENT_ID,
    SERVER_ID,
    common_tls_context,
    downstream_tls,
    meshproxy_tls_bootstrap,
    upstream_tls,
    write_certs,
)

CONNECTIONS = 50


def meshproxy_pair_bootstraps(
    port_a: int,
    port_b: int,
    upstream_port: int,
    admins: tuple[int, int],
    certs: dict[str, FsPath],
    curve: str,
) -> tuple[str, str]:
    """Bootstraps of sidecar A (plaintext in, mTLS out) and sidecar B (mTLS in, plaintext out)."""
    client = common_tls_context(certs["client_cert"], certs["client_key"], [curve], certs["ca"], SERVER_ID)
    server = common_tls_context(certs["server_cert"], certs["server_key"], [curve], certs["ca"], CLIENT_ID)
    a = meshproxy_tls_bootstrap(port_a, port_b, admins[0], cluster_tls=upstream_tls(client))
    b = meshproxy_tls_bootstrap(
        port_b, upstream_port, admins[1], listener_tls=downstream_tls(server, require_client_certificate=True)
    )
    return a, b


def haproxy_pair_configs(
    port_a: int, port_b: int, upstream_port: int, certs: dict[str, FsPath]
) -> tuple[str, str]:
    """haproxy configurations of sidecar A and sidecar B, mutual TLS 1.3 between them."""
    tls = f"ca-file {certs['ca']} verify required ssl-min-ver TLSv1.3"
    a = targets.haproxy_config(port_a, port_b).replace(
        f"    server s1 {targets.HOST}:{port_b}\n",
        f"    server s1 {targets.HOST}:{port_b} ssl crt {certs['client_combined']} {tls}\n",
    )
    b = targets.haproxy_config(port_b, upstream_port).replace(
        f"    bind {targets.HOST}:{port_b}\n",
        f"    bind {targets.HOST}:{port_b} ssl crt {certs['server_combined']} {tls}\n",
    )
    return a, b


def _meshproxy_pair(curve: str, baseline: bool = False) -> targets.ExtraTarget:
    def command(upstream_port: int, workdir: FsPath) -> tuple[list[list[str]], int, Any]:
        certs = write_certs(workdir)
        port_a, port_b = targets.free_port(), targets.free_port()
        admins = (targets.free_port(), targets.free_port())
        argvs = []
        for name, doc in zip(
            "ab", meshproxy_pair_bootstraps(port_a, port_b, upstream_port, admins, certs, curve), strict=True
        ):
            conf = workdir / f"sidecar-{name}.yaml"
            conf.write_text(doc)
            argvs.append(targets.meshproxy_argv("run", "-c", str(conf), baseline=baseline))

        def ready() -> bool:
            return all(targets.http_ok(p, "/ready") for p in admins) and targets.http_ok(port_a, "/")

        return argvs, port_a, ready

    return command


def _haproxy_pair(upstream_port: int, workdir: FsPath) -> tuple[list[list[str]], int, Any]:
    certs = write_certs(workdir)
    port_a, port_b = targets.free_port(), targets.free_port()
    argvs = []
    for name, conf_text in zip("ab", haproxy_pair_configs(port_a, port_b, upstream_port, certs), strict=True):
        conf = workdir / f"sidecar-{name}.cfg"
        conf.write_text(conf_text)
        argvs.append(["haproxy", "-db", "-f", str(conf)])
    return argvs, port_a, lambda: targets.http_ok(port_a, "/")


targets.register("meshproxy-pair", _meshproxy_pair("X25519MLKEM768"))
targets.register("meshproxy-pair-x25519", _meshproxy_pair("X25519"))
targets.register("meshproxy-pair-base", _meshproxy_pair("X25519MLKEM768", baseline=True))
targets.register("haproxy-pair", _haproxy_pair)


_PAIRS = ("meshproxy-pair", "meshproxy-pair-x25519", "haproxy-pair") + (
    ("meshproxy-pair-base",) if targets.BASELINE else ()
)
_BASE = [("meshproxy-pair", "meshproxy-pair-base")] if targets.BASELINE else []
_RATIO_ROWS = (
    ("saturating req/s", "saturate", "rps"),
    ("serial p50", "serial", "p50_ms"),
    ("pair CPU µs/req (saturating)", "saturate", "proxy_cpu_us_per_req"),
)
_ADDED_ROWS = (
    ("serial p50", "serial", "p50_ms"),
    ("serial p99", "serial", "p99_ms"),
)

SCENARIO = Scenario(
    name="mesh_path",
    title="Scenario 3: the mesh path, client → sidecar → mutual TLS 1.3 → sidecar → upstream (64 B)",
    paths=tuple(Path(t, t) for t in ("direct", *_PAIRS)),
    measurements=(*saturating_and_serial(CONNECTIONS),),
    comparisons=pairwise(
        [
            ("meshproxy-pair", "haproxy-pair"),
            ("meshproxy-pair", "meshproxy-pair-x25519"),
            ("meshproxy-pair", "direct"),
            ("haproxy-pair", "direct"),
            *_BASE,
        ],
        _RATIO_ROWS[:2],
    )
    + pairwise(
        [("meshproxy-pair", "haproxy-pair"), ("meshproxy-pair", "meshproxy-pair-x25519"), *_BASE],
        _RATIO_ROWS[2:],
    )
    + pairwise([(p, "direct") for p in _PAIRS], _ADDED_ROWS, kind="diff"),
    quick=Timing(rounds=1, duration_s=2),
    full=Timing(rounds=5, duration_s=10),
    note=(
        "Proxy CPU is both sidecars of the pair together (they run on the proxy core as children of "
        "one sh). The sidecar-to-sidecar connections are kept alive and pooled, so the key exchange "
        "(X25519MLKEM768 vs X25519) is paid at connection set-up, not per request: the two meshproxy "
        "pairs should differ by noise only. haproxy verifies the peer chain, not its SPIFFE URI SAN. "
        "Ratios are per-round pairs; the added-latency table is per-round differences from direct."
    ),
    filter_targets=False,
)

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], ["mesh_path"]))
