"""``make demo``: a sidecar in front of two services, real traffic through it, a short report.

Owns the local demo: two small upstream services ("hello v1" and "hello v2") on loopback, a
meshproxy process started from the embedded default bootstrap (``bootstrap.yaml`` beside this
file), a burst of keep-alive HTTP/1.1 traffic and a TCP session through it, and a report of
what happened (requests, the split between upstreams, latency percentiles, the proxy's own
counters). It exits 0 when every request succeeded; ``--keep-running`` leaves it all up.
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
        "upstream_a": port_a,
        "upstream_b": port_b,
    }
    work = Path(tempfile.mkdtemp(prefix="meshproxy-demo-"))
    template = string.Template(resources.files("meshproxy.demo").joinpath("bootstrap.yaml").read_text())
    bootstrap = work / "bootstrap.yaml"
    access_log = work / "access.log"
    bootstrap.write_text(template.substitute(ports, access_log=access_log))
    print(f"meshproxy demo: bootstrap {bootstrap}")
    print(
        f"  upstreams: hello-v1 on 127.0.0.1:{port_a} (STATIC), hello-v2 on localhost:{port_b} (STRICT_DNS)"
    )
    proc = subprocess.Popen([sys.executable, "-m", "meshproxy", "run", "-c", str(bootstrap)])
    try:
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
        print(f"TCP proxy: {tcp_reply!r}")
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
        ok = failed == 0 and extra[0][2] == "hello-v2" and extra[1][1] == 200 and "hello-v1" in tcp_reply
        return 0 if ok else 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = -9
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
