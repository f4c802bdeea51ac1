"""Idle memory of one sidecar: RSS, PSS and USS of ``meshproxy run`` once startup has settled.

``python -m benchmarks.idle_rss [--settle S] [--json]``. Three configurations, each a fresh
process with no traffic:

- ``http1``: a static bootstrap, one plaintext HTTP/1.1 listener routing to one STATIC cluster
  (targets.meshproxy_bootstrap, the benchmark proxy);
- ``mtls``: a static bootstrap, the inbound half of a mesh pair (mesh_path's sidecar B): a
  listener requiring a client certificate (PQ mutual TLS), plaintext to the application;
- ``ads``: the mesh sidecar: ``meshproxy run --ca-address ... --identity ...`` against a local
  ``controlplane serve`` (the demo's layout on free ports): its SVID from the CA, listeners and
  clusters over ADS; measured once ``/ready`` answers 200.

haproxy (when installed) runs the first two jobs with the same listener (plaintext; ``ssl crt
... verify required``). Figures from /proc/<pid>/status (VmRSS, threads) and
/proc/<pid>/smaps_rollup (Pss; USS = Private_Clean + Private_Dirty), in MiB. Owns no product
logic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import targets
from benchmarks.mesh_path import haproxy_pair_configs, meshproxy_pair_bootstraps
from benchmarks.system import machine_facts
from benchmarks.tls_hop import write_certs

SETTLE_S = 2.0  # after readiness: timers have run once, startup garbage is collected
MIB = 2**20


def memory(pid: int) -> dict[str, float]:
    """RSS, PSS, USS (MiB) and the thread count of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    kib = {}
    for line in (status + rollup).splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) >= 1 and parts[0].isdigit():
            kib[key] = int(parts[0])
    return {
        "rss_mib": round(kib["VmRSS"] / 1024, 1),
        "pss_mib": round(kib["Pss"] / 1024, 1),
        "uss_mib": round((kib["Private_Clean"] + kib["Private_Dirty"]) / 1024, 1),
        "threads": kib["Threads"],
    }


def _ready(admin_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{targets.HOST}:{admin_port}/ready", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@contextmanager
def _process(argv: list[str], log: Path, ready: Any) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=targets.REPO_ROOT)
    try:
        deadline = time.monotonic() + targets.READY_TIMEOUT_S
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[:4]} did not start: {log.read_text(errors='replace')[-1500:]}")
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(targets.STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _measure_meshproxy(argv: list[str], admin_port: int, log: Path, settle: float) -> dict[str, Any]:
    with _process(argv, log, lambda: _ready(admin_port)) as proc:
        time.sleep(settle)  # nothing to await: the figure is the process left alone
        return memory(proc.pid)


def _measure_haproxy(config: str, port: int, work: Path, settle: float) -> dict[str, Any]:
    path = work / "haproxy.cfg"
    path.write_text(config)
    argv = ["haproxy", "-db", "-f", str(path)]
    with _process(argv, work / "haproxy.log", lambda: targets.port_open(port)) as proc:
        time.sleep(settle)
        return memory(proc.pid)


def static_configs(work: Path) -> dict[str, tuple[str, str, int]]:
    """Per configuration: the meshproxy bootstrap, the haproxy config and the port both listen on."""
    port, upstream, admin = targets.free_port(), targets.free_port(), targets.free_port()
    certs = write_certs(work)
    _a, mesh_b = meshproxy_pair_bootstraps(upstream, port, upstream, (admin, admin), certs, "X25519MLKEM768")
    _ha, haproxy_b = haproxy_pair_configs(upstream, port, upstream, certs)
    return {
        "http1": (
            targets.meshproxy_bootstrap(port, upstream, admin),
            targets.haproxy_config(port, upstream),
            admin,
        ),
        "mtls": (mesh_b, haproxy_b, admin),
    }


def _static(name: str, work: Path, settle: float) -> dict[str, dict[str, Any]]:
    bootstrap, haproxy, admin = static_configs(work)[name]
    path = work / f"{name}.yaml"
    path.write_text(bootstrap)
    argv = targets.meshproxy_argv("run", "-c", str(path), "--log-level", "warning")
    rows = {"meshproxy": _measure_meshproxy(argv, admin, work / f"{name}.log", settle)}
    if shutil.which("haproxy"):
        port = int(haproxy.split(f"bind {targets.HOST}:")[1].split()[0])
        rows["haproxy"] = _measure_haproxy(haproxy, port, work, settle)
    return rows


def _ads(work: Path, settle: float) -> dict[str, dict[str, Any]]:
    """The demo's caller sidecar (identity from the CA, everything else over ADS)."""
    from controlplane.demo import layout
    from controlplane.demo.processes import Children

    plan = layout.plan(work, free_ports=True)
    children = Children(work)
    (work / "tokens").touch()
    cp_argv = [sys.executable, "-m", "controlplane", "serve", "--ca-dir", str(work / "ca")]
    cp_argv += ["--tokens", str(work / "tokens"), "--xds-address", plan.xds_address]
    cp_argv += ["--xds-tls-address", "off", "--mesh", str(plan.mesh_file)]
    cp = children.start("controlplane", cp_argv, "controlplane.log")
    try:
        found = asyncio.run(
            children.wait_for_line(cp, r"serving xDS \(ADS\) on (\S+)", targets.READY_TIMEOUT_S)
        )
        xds = found.group(1)
        car = plan.sidecars[0]
        admin = targets.free_port()
        token = layout.write_token(work / "tokens", car.identity, work / f"{car.group}.token")
        argv = targets.meshproxy_argv("run", "-c", str(layout.write_bootstrap(work, car, admin, xds)))
        argv += ["--ca-address", xds, "--identity", car.identity, "--log-level", "warning"]
        argv += ["--token-file", str(token), "--cert-dir", str(car.cert_dir)]
        return {"meshproxy": _measure_meshproxy(argv, admin, work / "sidecar.log", settle)}
    finally:
        children.stop_all()


def measure(settle: float = SETTLE_S) -> dict[str, dict[str, dict[str, Any]]]:
    results = {}
    for name in ("http1", "mtls", "ads"):
        with tempfile.TemporaryDirectory(prefix=f"idle-rss-{name}-") as tmp:
            work = Path(tmp)
            results[name] = _ads(work, settle) if name == "ads" else _static(name, work, settle)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.idle_rss", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--settle", type=float, default=SETTLE_S, help="seconds idle before reading")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    args = parser.parse_args(argv)
    results = measure(args.settle)
    if args.json:
        print(json.dumps({"machine": machine_facts(), "results": results}, indent=2))
        return 0
    print(f"{'config':8s} {'process':10s} {'RSS':>7s} {'PSS':>7s} {'USS':>7s} {'threads':>8s}")
    for name, rows in results.items():
        for who, r in rows.items():
            print(
                f"{name:8s} {who:10s} {r['rss_mib']:7.1f} {r['pss_mib']:7.1f} {r['uss_mib']:7.1f} "
                f"{r['threads']:8d}"
            )
    print("MiB; RSS from /proc/<pid>/status, PSS and USS (private) from /proc/<pid>/smaps_rollup")
    return 0


if __name__ == "__main__":
    sys.exit(main())
