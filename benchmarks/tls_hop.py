"""Scenario 2: TLS at one hop, meshproxy beside haproxy and nginx terminating TLS for the same job.

Each proxy terminates server-only TLS (TLS 1.3, one ECDSA P-256 leaf) and forwards plaintext
HTTP/1.1 keep-alive to the 64-byte upstream. Two loads: keep-alive throughput (``wrk -t1 -c50``
over HTTPS) and full handshakes/s (the same with ``Connection: close``: every request opens a new
TCP connection and does a full TLS 1.3 handshake; wrk keeps no session tickets, so none resume).

wrk links the system OpenSSL 3.0, which has no ML-KEM: the client leg is X25519 whatever the proxy
prefers. meshproxy's listener offers ``[X25519MLKEM768, X25519]`` (hybrid preferred), so this
measures it with X25519, as haproxy and nginx (defaults: X25519 first) are measured.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path as FsPath
from typing import Any

import yaml

from benchmarks import cli, targets, wrk
from benchmarks.histogram import PERCENTILES, percentile_key
from benchmarks.runner import Measurement, Path, RunFn, Scenario, Settings, Timing, pairwise

CONNECTIONS = 50
TRUST_DOMAIN = "mesh.local"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/client"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/server"
DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
PREFERRED_CURVES = ["X25519MLKEM768", "X25519"]


# -- certificates -------------------------------------------------------------------------------


def write_certs(directory: FsPath) -> dict[str, FsPath]:
    """A CA and two SVIDs (client, server) as PEM files in ``directory``.

    Keys: ``ca`` (the bundle), ``<who>_cert``, ``<who>_key``, and ``<who>_combined`` (cert then key,
    as haproxy's ``crt`` wants) for who in client, server.
    """
    from meshproxy.identity.certs import certs_to_pem, generate_ca, generate_csr, key_to_pem, sign_csr
    from meshproxy.identity.spiffe import SpiffeId

    now = datetime.now(UTC) - timedelta(minutes=5)
    ca = generate_ca(TRUST_DOMAIN, now=now, ttl=timedelta(days=2))
    out = {"ca": directory / "ca.pem"}
    out["ca"].write_bytes(certs_to_pem([ca.cert]))
    for who, sid in (("client", CLIENT_ID), ("server", SERVER_ID)):
        spiffe = SpiffeId.parse(sid)
        key, csr = generate_csr(spiffe)
        cert_pem = certs_to_pem([sign_csr(ca, csr, spiffe, now=now + timedelta(minutes=4))])
        key_pem = key_to_pem(key)
        for kind, data in (("cert", cert_pem), ("key", key_pem), ("combined", cert_pem + key_pem)):
            out[f"{who}_{kind}"] = directory / f"{who}-{kind}.pem"
            out[f"{who}_{kind}"].write_bytes(data)
    return out


# -- configurations (pure) ----------------------------------------------------------------------


def common_tls_context(
    cert: FsPath, key: FsPath, curves: list[str], ca: FsPath | None = None, peer_id: str | None = None
) -> dict[str, Any]:
    """Envoy's CommonTlsContext: TLS 1.3, ``curves``, one certificate; a validation context when
    ``ca`` is given (with an exact URI SAN match when ``peer_id`` is)."""
    ctx: dict[str, Any] = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "ecdh_curves": curves},
        "tls_certificates": [
            {"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}
        ],
    }
    if ca is not None:
        validation: dict[str, Any] = {"trusted_ca": {"filename": str(ca)}}
        if peer_id:
            validation["match_typed_subject_alt_names"] = [{"san_type": "URI", "matcher": {"exact": peer_id}}]
        ctx["validation_context"] = validation
    return ctx


def downstream_tls(context: dict[str, Any], *, require_client_certificate: bool = False) -> dict[str, Any]:
    typed: dict[str, Any] = {"@type": DOWNSTREAM, "common_tls_context": context}
    if require_client_certificate:
        typed["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed}


def upstream_tls(context: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": UPSTREAM, "common_tls_context": context},
    }


def meshproxy_tls_bootstrap(
    port: int,
    upstream_port: int,
    admin_port: int,
    *,
    listener_tls: dict[str, Any] | None = None,
    cluster_tls: dict[str, Any] | None = None,
) -> str:
    """targets.meshproxy_bootstrap with a transport socket on its listener and/or its cluster."""
    doc = yaml.safe_load(targets.meshproxy_bootstrap(port, upstream_port, admin_port))
    if listener_tls is not None:
        doc["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = listener_tls
    if cluster_tls is not None:
        doc["static_resources"]["clusters"][0]["transport_socket"] = cluster_tls
    return yaml.safe_dump(doc, sort_keys=False)


def haproxy_tls_config(port: int, upstream_port: int, combined: FsPath) -> str:
    """targets.haproxy_config with ``ssl crt`` on the bind (server-only TLS 1.3)."""
    conf = targets.haproxy_config(port, upstream_port)
    bind = f"    bind {targets.HOST}:{port}\n"
    return conf.replace(bind, f"    bind {targets.HOST}:{port} ssl crt {combined} ssl-min-ver TLSv1.3\n")


def nginx_tls_config(port: int, upstream_port: int, prefix: FsPath, cert: FsPath, key: FsPath) -> str:
    """targets.nginx_config with ``listen ... ssl`` (server-only TLS 1.3)."""
    conf = targets.nginx_config(port, upstream_port, prefix)
    listen = f"        listen {targets.HOST}:{port};\n"
    tls = (
        f"        listen {targets.HOST}:{port} ssl;\n"
        f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
        "        ssl_protocols TLSv1.3;\n"
    )
    return conf.replace(listen, tls)


# -- targets ------------------------------------------------------------------------------------


def _meshproxy_tls(
    upstream_port: int, workdir: FsPath, baseline: bool = False
) -> tuple[list[list[str]], int, Any]:
    certs = write_certs(workdir)
    port, admin = targets.free_port(), targets.free_port()
    ctx = common_tls_context(certs["server_cert"], certs["server_key"], PREFERRED_CURVES)
    conf = workdir / "bootstrap.yaml"
    conf.write_text(meshproxy_tls_bootstrap(port, upstream_port, admin, listener_tls=downstream_tls(ctx)))
    argv = targets.meshproxy_argv("run", "-c", str(conf), baseline=baseline)
    return [argv], port, lambda: targets.http_ok(admin, "/ready") and targets.port_open(port)


def _haproxy_tls(upstream_port: int, workdir: FsPath) -> tuple[list[list[str]], int, Any]:
    certs = write_certs(workdir)
    port = targets.free_port()
    conf = workdir / "haproxy.cfg"
    conf.write_text(haproxy_tls_config(port, upstream_port, certs["server_combined"]))
    return [["haproxy", "-db", "-f", str(conf)]], port, lambda: targets.port_open(port)


def _nginx_tls(upstream_port: int, workdir: FsPath) -> tuple[list[list[str]], int, Any]:
    certs = write_certs(workdir)
    port = targets.free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_tls_config(port, upstream_port, workdir, certs["server_cert"], certs["server_key"]))
    argv = ["nginx", "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]
    return [[*argv, "-g", "daemon off;"]], port, lambda: targets.port_open(port)


targets.register("meshproxy-tls", _meshproxy_tls)
targets.register("meshproxy-tls-base", functools.partial(_meshproxy_tls, baseline=True))
targets.register("haproxy-tls", _haproxy_tls)
targets.register("nginx-tls", _nginx_tls)


# -- load ---------------------------------------------------------------------------------------


def wrk_argv(
    url: str, connections: int, duration_s: float, cpu: int, script: FsPath, headers: tuple[str, ...] = ()
) -> list[str]:
    """wrk's command line as wrk.run builds it, for any URL and with extra headers."""
    argv = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}"]
    argv += [f"-d{max(1, round(duration_s))}s", "--timeout", "5s", "-s", str(script)]
    for header in headers:
        argv += ["-H", header]
    return [*argv, url]


def wrk_url(
    url: str,
    connections: int,
    duration_s: float,
    cpu: int,
    headers: tuple[str, ...] = (),
    within: tuple[str, ...] = (),
) -> dict[str, Any]:
    """wrk.run for a URL of any scheme (wrk speaks HTTPS with the system OpenSSL), run under the
    command prefix ``within`` when given (``ip netns exec POD``: wrk in a pod)."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = FsPath(tmp) / "report.lua"
        lua_list = ", ".join(percentile_key(q) for q in PERCENTILES)
        script.write_text(wrk._LUA % {"percentiles": lua_list, "mark": wrk._MARK})
        argv = [*within, *wrk_argv(url, connections, duration_s, cpu, script, headers)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout[-2000:]}")
    return wrk.parse(done.stdout)


def _https(connections: int, close: bool) -> RunFn:
    headers = ("Connection: close",) if close else ()

    def run(settings: Settings, port: int) -> dict[str, Any]:
        url = f"https://{targets.HOST}:{port}/"
        metrics = wrk_url(url, connections, settings.duration_s, settings.cpu_load, headers)
        if close:
            metrics["handshakes_per_s"] = metrics["rps"]
        return metrics

    return run


_PATHS = ("meshproxy-tls", "haproxy-tls", "nginx-tls") + (("meshproxy-tls-base",) if targets.BASELINE else ())
_RATIO_ROWS = (
    ("keep-alive req/s", "keepalive", "rps"),
    ("keep-alive p50", "keepalive", "p50_ms"),
    ("full handshakes/s", "handshake", "rps"),
    ("handshake p50", "handshake", "p50_ms"),
    ("proxy CPU µs/handshake", "handshake", "proxy_cpu_us_per_req"),
)

SCENARIO = Scenario(
    name="tls_hop",
    title="Scenario 2: TLS at one hop (TLS 1.3, ECDSA P-256, client leg X25519), 64-byte responses",
    paths=tuple(Path(t, t) for t in _PATHS),
    measurements=(
        Measurement(
            "keepalive",
            f"Keep-alive throughput over HTTPS (wrk -t1 -c{CONNECTIONS})",
            "throughput",
            _https(CONNECTIONS, close=False),
        ),
        Measurement(
            "handshake",
            f"Full handshakes/s (wrk -t1 -c{CONNECTIONS}, Connection: close: new TLS connection per request)",
            "throughput",
            _https(CONNECTIONS, close=True),
        ),
    ),
    comparisons=pairwise(
        [
            ("meshproxy-tls", "haproxy-tls"),
            ("meshproxy-tls", "nginx-tls"),
            ("nginx-tls", "haproxy-tls"),
            *([("meshproxy-tls", "meshproxy-tls-base")] if targets.BASELINE else []),
        ],
        _RATIO_ROWS,
    ),
    quick=Timing(rounds=1, duration_s=2),
    full=Timing(rounds=5, duration_s=10),
    note=(
        "wrk uses the system OpenSSL 3.0 (no ML-KEM), so every client leg here is X25519: meshproxy's "
        "listener prefers X25519MLKEM768 but falls back to X25519, and haproxy and nginx run their "
        "classical defaults. The hybrid group is measured between meshproxy sidecars (mesh_path). "
        "No direct path: the upstream speaks only plaintext. The runner's 1 s plaintext warm-up "
        "does not warm a TLS port (it only draws TLS alerts). Ratios are per-round pairs."
    ),
    filter_targets=False,
)

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], ["tls_hop"]))
