"""TLS micro-benchmarks (issue 3): handshake rate and bulk throughput, ours against the stdlib.

``python -m benchmarks.tls_micro [--seconds S] [--repeat N]`` prints one table:

- full mutual-TLS handshakes per second (no resumption, client certificate verified both ways,
  TLS 1.3), with X25519MLKEM768 and with X25519: two ``TlsEngine``s passing bytes in memory,
  and over loopback through ``TlsProtocol`` under uvloop (client and server in this process);
  the interpreter's ``ssl`` the same two ways (``SSLObject`` pairs; asyncio's ssl transport)
  with X25519, the best its OpenSSL offers when it predates ML-KEM;
- bulk MB/s over one loopback connection under uvloop, 1 MiB writes with flow control, 1 GiB or
  ``--seconds`` (whichever first), through ``TlsProtocol`` and through asyncio's ssl transport;
- the record path alone (issue 14): round trips/s of a 300-byte request and a 200-byte response
  (and of 16 KiB each way) between two established connections in memory, each direction one
  ``encrypt`` and one ``receive``, through the compiled ``_records_c`` and its twin ``_records_py``.

Each figure is the median of ``--repeat`` runs. Certificates: an ECDSA P-256 CA and leaves,
made in memory for the run. Owns no product logic; imports the TLS package and the test PKI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from cryptography.hazmat.backends.openssl.backend import backend

from meshproxy.tls import REQUIRED, TlsConfig, TlsContext, TlsProtocol, _records_py, connect_tls
from meshproxy.tls.policy import PqMode, PqPolicy

# The test PKI (tests/ is not a package: its directory goes on the path, as pytest does).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from unit.tls.tls_fixtures import Pki

X25519_ONLY = PqPolicy(PqMode.OFF, ("X25519",))
CHUNK = 1 << 20
# The record path's clock: a busy neighbour takes wall time, not this thread's CPU. Reading it is a
# system call, so it is read once per 256 round trips.
CPU = time.thread_time
BULK_LIMIT = 1 << 30


class Fixture:
    """Our configs for each group, and stdlib contexts over the same certificates."""

    def __init__(self, tmp: Path) -> None:
        pki = Pki()
        server, client = pki.leaf("server"), pki.leaf("client")
        self.ours: dict[str, tuple[TlsConfig, TlsConfig]] = {}
        for name, policy in (("X25519MLKEM768", REQUIRED), ("X25519", X25519_ONLY)):
            s = pki.config(server, server_side=True, pq_policy=policy)
            c = pki.config(client, server_side=False, pq_policy=policy)
            self.ours[name] = (s, c)
        paths = {}
        for role, leaf in (("server", server), ("client", client)):
            (tmp / f"{role}.pem").write_bytes(leaf.chain)
            (tmp / f"{role}.key").write_bytes(leaf.key)
            paths[role] = (str(tmp / f"{role}.pem"), str(tmp / f"{role}.key"))
        self.std_server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.std_client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.std_client.check_hostname = False  # mesh identities are URI SANs, not host names
        for ctx, role in ((self.std_server, "server"), (self.std_client, "client")):
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.load_cert_chain(*paths[role])
            ctx.load_verify_locations(cadata=pki.ca_pem.decode())
            ctx.verify_mode = ssl.CERT_REQUIRED

    def contexts(self, group: str) -> tuple[TlsContext, TlsContext]:
        s, c = self.ours[group]
        return TlsContext(s), TlsContext(c, session_capacity=0)  # capacity 0: never resume


def rate(
    run: Callable[[], Any], seconds: float, clock: Callable[[], float] = time.perf_counter, batch: int = 1
) -> float:
    """Calls per second of ``run`` over about ``seconds`` of ``clock``, read every ``batch`` calls."""
    n, start = 0, clock()
    while (elapsed := clock() - start) < seconds:
        for _ in range(batch):
            run()
        n += batch
    return n / elapsed


def engine_handshake(server: TlsContext, client: TlsContext) -> Callable[[], None]:
    def once() -> None:
        engine_handshake_done(server.engine(), client.engine())

    return once


def record_round_trip(fx: Fixture, twin: Any, request: int, response: int) -> Callable[[], None]:
    """One request and one response through ``twin.Records`` on an established connection pair."""
    server, client = fx.contexts("X25519MLKEM768")
    s, c = server.engine(), client.engine()
    engine_handshake_done(s, c)
    ours, theirs = twin.Records(c._conn), twin.Records(s._conn)
    req, resp = os.urandom(request), os.urandom(response)

    def once() -> None:
        theirs.receive(ours.encrypt(req)[1])
        ours.receive(theirs.encrypt(resp)[1])

    once()
    assert ours.receive(theirs.encrypt(resp)[1])[0] == resp
    return once


def engine_handshake_done(s: Any, c: Any) -> None:
    c.start_handshake()
    while not (s.handshake_complete and c.handshake_complete):
        if data := c.data_to_send():
            s.receive_data(data)
        if data := s.data_to_send():
            c.receive_data(data)
    c.read()  # the server's session tickets


def stdlib_handshake(fx: Fixture) -> Callable[[], None]:
    def once() -> None:
        sin, sout, cin, cout = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        s = fx.std_server.wrap_bio(sin, sout, server_side=True)
        c = fx.std_client.wrap_bio(cin, cout, server_side=False)
        done = [False, False]
        while not all(done):
            for i, (obj, out, peer_in) in enumerate(((c, cout, sin), (s, sout, cin))):
                if not done[i]:
                    try:
                        obj.do_handshake()
                        done[i] = True
                    except ssl.SSLWantReadError:
                        pass
                if out.pending:
                    peer_in.write(out.read())

    return once


class Sink(asyncio.Protocol):
    """Server side: counts bytes (bulk) or does nothing (handshakes)."""

    def __init__(self) -> None:
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += len(data)


class Writer(asyncio.Protocol):
    """Client side: honours pause_writing/resume_writing."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


async def _serve(ours: TlsContext | None, fx: Fixture, sinks: list[Sink]) -> asyncio.Server:
    loop = asyncio.get_running_loop()

    def sink() -> Sink:
        sinks.append(Sink())
        return sinks[-1]

    if ours is None:
        return await loop.create_server(sink, "127.0.0.1", 0, ssl=fx.std_server)
    return await loop.create_server(lambda: TlsProtocol(ours.engine(), sink()), "127.0.0.1", 0)


async def _connect(client: TlsContext | None, fx: Fixture, port: int) -> tuple[asyncio.Transport, Writer]:
    loop = asyncio.get_running_loop()
    if client is None:
        return await loop.create_connection(Writer, "127.0.0.1", port, ssl=fx.std_client, server_hostname="")  # type: ignore[return-value]
    return await connect_tls(loop, "127.0.0.1", port, client, Writer)  # type: ignore[return-value]


async def loopback_handshakes(fx: Fixture, group: str | None, seconds: float) -> float:
    server, client = fx.contexts(group) if group else (None, None)
    srv = await _serve(server, fx, [])
    port = srv.sockets[0].getsockname()[1]
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        transport, _ = await _connect(client, fx, port)
        transport.close()
        n += 1
    srv.close()
    return n / elapsed


async def bulk(fx: Fixture, ours: bool, seconds: float) -> float:
    server, client = fx.contexts("X25519MLKEM768") if ours else (None, None)
    sinks: list[Sink] = []
    srv = await _serve(server, fx, sinks)
    transport, writer = await _connect(client, fx, srv.sockets[0].getsockname()[1])
    chunk, sent = os.urandom(CHUNK), 0
    start = time.perf_counter()
    while sent < BULK_LIMIT and time.perf_counter() - start < seconds:
        await writer.writable.wait()
        transport.write(chunk)
        sent += CHUNK
    while sinks[0].received < sent:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - start
    transport.close()
    srv.close()
    return sent / elapsed / 1e6


def measure(
    seconds: float, repeat: int, fx: Fixture, compiled: Any, records_only: bool = False
) -> tuple[dict[str, float], dict[str, float]]:
    """Median of each figure, and median of per-round ratios; variants alternate within a round
    so that a noisy neighbour slows all of them alike."""
    bulk_seconds = max(seconds, 5.0)
    variants: dict[str, Callable[[], float]] = {
        "mem pq": lambda: rate(engine_handshake(*fx.contexts("X25519MLKEM768")), seconds),
        "mem x": lambda: rate(engine_handshake(*fx.contexts("X25519")), seconds),
        "mem ssl": lambda: rate(stdlib_handshake(fx), seconds),
        "net pq": lambda: uvloop.run(loopback_handshakes(fx, "X25519MLKEM768", seconds)),
        "net x": lambda: uvloop.run(loopback_handshakes(fx, "X25519", seconds)),
        "net ssl": lambda: uvloop.run(loopback_handshakes(fx, None, seconds)),
        "bulk ours": lambda: uvloop.run(bulk(fx, True, bulk_seconds)),
        "bulk ssl": lambda: uvloop.run(bulk(fx, False, bulk_seconds)),
        "rec py": lambda: rate(record_round_trip(fx, _records_py, 300, 200), seconds, CPU, 256),
        "rec py 16k": lambda: rate(record_round_trip(fx, _records_py, 16384, 16384), seconds, CPU, 256),
    }
    if compiled is not None:
        variants["rec c"] = lambda: rate(record_round_trip(fx, compiled, 300, 200), seconds, CPU, 256)
        variants["rec c 16k"] = lambda: rate(record_round_trip(fx, compiled, 16384, 16384), seconds, CPU, 256)
    ratios = {
        "mem pq/x": ("mem pq", "mem x"),
        "mem pq/ssl": ("mem pq", "mem ssl"),
        "mem x/ssl": ("mem x", "mem ssl"),
        "net pq/x": ("net pq", "net x"),
        "net pq/ssl": ("net pq", "net ssl"),
        "net x/ssl": ("net x", "net ssl"),
        "bulk": ("bulk ours", "bulk ssl"),
    }
    if compiled is not None:
        ratios["rec c/py"] = ("rec c", "rec py")
        ratios["rec c/py 16k"] = ("rec c 16k", "rec py 16k")
    if records_only:
        variants = {name: run for name, run in variants.items() if name.startswith("rec")}
        ratios = {key: pair for key, pair in ratios.items() if key.startswith("rec")}
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(repeat):
        names = list(variants)
        names = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in names:
            runs[name].append(variants[name]())
    medians = {name: statistics.median(values) for name, values in runs.items()}
    ratio = {
        key: statistics.median(a / b for a, b in zip(runs[num], runs[den], strict=True))
        for key, (num, den) in ratios.items()
    }
    return medians, ratio


def handshake_and_bulk_rows(m: dict[str, float], r: dict[str, float]) -> list[tuple[str, str, str]]:
    return [
        ("full mTLS handshakes/s, two engines in memory", "", ""),
        ("  ours, X25519MLKEM768", f"{m['mem pq']:.0f}", f"{r['mem pq/x']:.2f}x ours X25519 (goal 0.9)"),
        ("", "", f"{r['mem pq/ssl']:.2f}x ssl X25519 (goal 1.0)"),
        ("  ours, X25519", f"{m['mem x']:.0f}", f"{r['mem x/ssl']:.2f}x ssl X25519"),
        ("  ssl (SSLObject), X25519", f"{m['mem ssl']:.0f}", ""),
        ("full mTLS handshakes/s, loopback, uvloop", "", ""),
        (
            "  ours (TlsProtocol), X25519MLKEM768",
            f"{m['net pq']:.0f}",
            f"{r['net pq/x']:.2f}x ours X25519 (goal 0.9)",
        ),
        ("", "", f"{r['net pq/ssl']:.2f}x ssl X25519 (goal 1.0)"),
        ("  ours (TlsProtocol), X25519", f"{m['net x']:.0f}", f"{r['net x/ssl']:.2f}x ssl X25519"),
        ("  asyncio ssl, X25519", f"{m['net ssl']:.0f}", ""),
        ("bulk MB/s, loopback, uvloop, 1 MiB writes", "", ""),
        ("  ours (TlsProtocol)", f"{m['bulk ours']:.0f}", f"{r['bulk']:.2f}x asyncio ssl (goal 0.9)"),
        ("  asyncio ssl", f"{m['bulk ssl']:.0f}", ""),
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="per handshake run (bulk: at least 5)")
    ap.add_argument("--repeat", type=int, default=7, help="rounds; figures are medians over rounds")
    ap.add_argument("--records-only", action="store_true", help="only the record-path rows")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fx = Fixture(Path(tmp))
    try:
        from meshproxy.tls import _records_c as compiled
    except ImportError:  # not built: the record-path rows show the twin alone
        compiled = None
    m, r = measure(args.seconds, args.repeat, fx, compiled, args.records_only)
    rows = [] if args.records_only else handshake_and_bulk_rows(m, r)
    for title, key in (("300 B + 200 B", ""), ("16 KiB each way", " 16k")):
        rows.append((f"record path round trips per CPU second, {title}, in memory", "", ""))
        if compiled is not None:
            goal = "" if key else " (goal 3.0)"
            ratio = f"{r['rec c/py' + key]:.2f}x _records_py{goal}"
            rows.append(("  _records_c", f"{m['rec c' + key]:.0f}", ratio))
        rows.append(("  _records_py (cffi)", f"{m['rec py' + key]:.0f}", ""))
    cpu = platform.processor() or platform.machine()
    print(f"# {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, uvloop {uvloop.__version__}")
    print(f"# ours: {backend.openssl_version_text()}; interpreter's ssl: {ssl.OPENSSL_VERSION}")
    print(f"# medians of {args.repeat} interleaved rounds ({args.seconds:g}s per handshake run); ratios are")
    print("# medians of per-round ratios; both ends run in this process, on one core")
    width = max(len(row[0]) for row in rows)
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>6}  {ratio}")


if __name__ == "__main__":
    main()
