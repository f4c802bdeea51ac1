"""``make demo``: two sidecars, post-quantum mTLS between them, real traffic, a short report.

Owns the local demo: two small upstream services ("hello v1" and "hello v2") on loopback, a
SPIFFE CA and one SVID per sidecar (keys made by each identity, certificates issued from CSRs),
the demo's sidecar started from the embedded default bootstrap (``bootstrap.yaml`` beside
this file) and hello-v1's own sidecar (``inbound.yaml``), which accepts only mutual TLS 1.3
with the hybrid X25519MLKEM768 group; a burst of keep-alive HTTP/1.1 traffic and a TCP session
through them, and a report of what happened (requests, the split between upstreams, latency
percentiles, the TLS evidence, the proxies' own counters). It exits 0 when every request
succeeded; ``--keep-running`` leaves it all up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from importlib import resources
from pathlib import Path

# ----------------------------------------------------------------------------- upstreams


class _Hello(asyncio.Protocol):
    """A tiny keep-alive HTTP/1.1 service that says who it is (requests have no body here)."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            body = b"hello from %b, you asked for %b\n" % (self.name, path)
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-served-by: %b\r\n"
                b"content-length: %d\r\n\r\n%b" % (self.name, len(body), body)
            )
            if b"connection: close" in head.lower():
                self.transport.close()
                return


async def _start_upstream(name: bytes, hosts: list[str]) -> tuple[list[asyncio.Server], int]:
    loop = asyncio.get_running_loop()
    first = await loop.create_server(lambda: _Hello(name), hosts[0], 0)
    port = first.sockets[0].getsockname()[1]
    servers = [first]
    for host in hosts[1:]:
        try:
            servers.append(await loop.create_server(lambda: _Hello(name), host, port))
        except OSError:
            pass
    return servers, port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _localhost_addresses() -> list[str]:
    return list(
        dict.fromkeys(str(ai[4][0]) for ai in socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM))
    )


# ----------------------------------------------------------------------------- client


async def _client(port: int, paths: list[str], results: list[tuple[float, int, str]]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for path in paths:
            t0 = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nhost: hello\r\nuser-agent: meshproxy-demo\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            await reader.readexactly(int(fields.get("content-length", "0")))
            results.append((time.perf_counter() - t0, status, fields.get("x-served-by", "proxy")))
    finally:
        writer.close()


async def _tcp_echo_roundtrip(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /over-tcp HTTP/1.1\r\nhost: hello\r\nconnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return data.decode("latin-1").rsplit("\r\n", 1)[-1].strip()


def _pct(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return bytes(resp.read())


def _write_certs(directory: Path) -> None:
    """A CA and an SVID for each sidecar, issued the way the control plane's CA does it."""
    from datetime import UTC, datetime

    from meshproxy.identity import certs
    from meshproxy.identity.spiffe import SpiffeId

    now = datetime.now(UTC)
    ca = certs.generate_ca("mesh.local", now=now)
    directory.mkdir()
    (directory / "ca.crt").write_bytes(certs.certs_to_pem([ca.cert]))
    for name in ("demo", "hello-v1"):
        spiffe_id = SpiffeId.for_service_account("mesh.local", "demo", name)
        key, csr = certs.generate_csr(spiffe_id)
        svid = certs.sign_csr(ca, csr, spiffe_id, now=now)
        (directory / f"{name}.crt").write_bytes(certs.certs_to_pem([svid]))
        (directory / f"{name}.key").write_bytes(certs.key_to_pem(key))


def _start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "meshproxy", "run", "-c", str(config)])


async def _wait_ready(admin: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"meshproxy exited with status {proc.returncode} before it was ready")
        try:
            if await asyncio.to_thread(_get, f"http://127.0.0.1:{admin}/ready") == b"LIVE\n":
                return
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise SystemExit("meshproxy did not become ready within 20s")


async def _demo(args: argparse.Namespace) -> int:
    v1, port_a = await _start_upstream(b"hello-v1", ["127.0.0.1"])
    v2, port_b = await _start_upstream(b"hello-v2", _localhost_addresses())
    ports = {
        "listener_port": _free_port(),
        "tcp_port": _free_port(),
        "admin_port": _free_port(),
        "inbound_port": _free_port(),
        "inbound_admin_port": _free_port(),
        "upstream_a": port_a,
        "upstream_b": port_b,
    }
    work = Path(tempfile.mkdtemp(prefix="meshproxy-demo-"))
    _write_certs(work / "certs")
    access_log, inbound_log = work / "access.log", work / "inbound-access.log"
    values = {**ports, "access_log": access_log, "inbound_access_log": inbound_log, "certs": work / "certs"}
    configs = {}
    for name in ("bootstrap.yaml", "inbound.yaml"):
        template = string.Template(resources.files("meshproxy.demo").joinpath(name).read_text())
        configs[name] = work / name
        configs[name].write_text(template.substitute(values))
    print(f"meshproxy demo: bootstraps and certificates in {work}")
    print(
        f"  upstreams: hello-v1 on 127.0.0.1:{port_a} behind its sidecar on :{ports['inbound_port']} "
        f"(PQ mTLS), hello-v2 on localhost:{port_b} (STRICT_DNS)"
    )
    inbound = _start(configs["inbound.yaml"])
    proc = _start(configs["bootstrap.yaml"])
    try:
        await _wait_ready(ports["inbound_admin_port"], inbound, time.monotonic() + 20)
        await _wait_ready(ports["admin_port"], proc, time.monotonic() + 20)
        print(
            f"  meshproxy pid {proc.pid}: HTTP on :{ports['listener_port']}, TCP on :{ports['tcp_port']}, "
            f"admin on :{ports['admin_port']}"
        )
        results: list[tuple[float, int, str]] = []
        per_conn = args.requests // args.connections
        paths = [f"/hello/{i}" for i in range(per_conn)]
        t0 = time.perf_counter()
        await asyncio.gather(
            *(_client(ports["listener_port"], paths, results) for _ in range(args.connections))
        )
        elapsed = time.perf_counter() - t0
        extra: list[tuple[float, int, str]] = []
        await _client(ports["listener_port"], ["/v2/pinned", "/healthz"], extra)
        tcp_reply = await _tcp_echo_roundtrip(ports["tcp_port"])
        lat = sorted(r[0] * 1000 for r in results)
        split = Counter(r[2] for r in results)
        failed = sum(1 for r in results if r[1] != 200)
        stats = json.loads(await asyncio.to_thread(_get, f"http://127.0.0.1:{ports['admin_port']}/stats"))
        inbound_stats = json.loads(
            await asyncio.to_thread(_get, f"http://127.0.0.1:{ports['inbound_admin_port']}/stats")
        )
        print()
        print(
            f"HTTP/1.1 through the sidecar: {len(results)} requests over {args.connections} keep-alive "
            f"connections in {elapsed:.2f}s ({len(results) / elapsed:,.0f} req/s), {failed} failed"
        )
        for name, n in sorted(split.items()):
            print(
                f"  {name:10s} {n:5d}  ({100 * n / len(results):.1f}%; route weight "
                f"{80 if name == 'hello-v1' else 20}%)"
            )
        print(
            f"  latency ms: p50 {_pct(lat, 0.5):.2f}  p90 {_pct(lat, 0.9):.2f}  p99 {_pct(lat, 0.99):.2f}  "
            f"max {lat[-1]:.2f}"
        )
        print(
            f"  /v2/pinned -> {extra[0][2]} (prefix_rewrite to /), /healthz -> {extra[1][1]} direct response"
        )
        print(f"TCP proxy (through the mTLS hop too): {tcp_reply!r}")
        groups = inbound_stats["listener.inbound.ssl_handshakes_by_group"]
        print(
            f"mTLS hop to hello-v1's sidecar: handshakes by group {groups}, "
            f"refused {inbound_stats['listener.inbound.ssl_connection_error']}"
        )
        print(
            "proxy counters: "
            f"downstream_rq_total={stats['http.outbound_http.downstream_rq_total']} "
            f"2xx={stats['http.outbound_http.downstream_rq_xx'][2]} "
            f"upstream_cx_total(v1)={stats['cluster.hello_v1.upstream_cx_total']} "
            f"upstream_cx_total(v2)={stats['cluster.hello_v2.upstream_cx_total']}"
        )
        if args.keep_running:
            print("running; Ctrl-C to stop")
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
            await stop.wait()
        ok = (
            failed == 0
            and extra[0][2] == "hello-v2"
            and extra[1][1] == 200
            and "hello-v1" in tcp_reply
            and set(groups) == {"X25519MLKEM768"}
        )
        return 0 if ok else 1
    finally:
        codes = []
        for p in (proc, inbound):
            p.send_signal(signal.SIGTERM)
            try:
                codes.append(await asyncio.to_thread(p.wait, 10))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(-9)
        code = codes[0]
        if inbound_log.exists() and inbound_log.read_text().strip():
            first = json.loads(inbound_log.read_text().splitlines()[0])
            print(
                f"hello-v1's sidecar saw: {first.get('tls_version')} {first.get('tls_group')} "
                f"{first.get('tls_cipher')}, peer {first.get('peer_identity')}"
            )
        print(
            f"meshproxy drained and exited ({code}); access log: {access_log} "
            f"({len(access_log.read_text().splitlines()) if access_log.exists() else 0} lines)"
        )
        for s in (*v1, *v2):
            s.close()


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m meshproxy.demo", description=__doc__)
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--connections", type=int, default=20)
    p.add_argument("--keep-running", action="store_true", help="leave everything up until Ctrl-C")
    args = p.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    from meshproxy.cli import new_event_loop

    loop = new_event_loop()
    try:
        return loop.run_until_complete(_demo(args))
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
