"""An open-loop HTTP/1.1 load generator in the manner of wrk2: a fixed rate, latency from intended times.

Owns sending requests at a fixed total rate over N keep-alive connections and measuring each
latency from the time the request *should* have been sent, so a stall in the system under test
counts against every request it delayed, not only the one it caught (coordinated omission). Runs
in one process, or in several (``--processes``) when one cannot keep the rate; each returns a
histogram (histogram.py) and the parent merges them. Depends on httptools and uvloop when present.

Schedule: connection ``g`` of ``N`` sends its requests at ``t0 + g/rate + k*N/rate``. HTTP/1.1
without pipelining sends one request at a time per connection, so a request that falls due while
its connection waits for a response goes out as soon as that response arrives; its latency still
counts from its intended time. Loop timers have millisecond granularity (uvloop), so a connection
wakes ``EARLY_NS`` ahead and sends at once; a request sent early is measured from its real send
time, i.e. latency = response time - min(intended, sent). ``lag`` records how late the generator
itself was when it was idle (its own accuracy); ``service`` the latency from the real send, which
is what a closed-loop tool would report.

With ``rate`` 0 it runs closed loop instead (each connection sends its next request when the
previous one is answered, latency from the real send): the naive measurement that the open-loop
validation shows hiding a stall.

Bounds: requests are scheduled only before ``t0 + duration``; after that, outstanding and overdue
requests get ``drain_s`` to finish, and whatever remains is reported as ``incomplete``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, cast

import httptools

from benchmarks.histogram import PERCENTILES, Histogram, latency_metrics, percentile_key
from benchmarks.system import loop_factory

REPO_ROOT = Path(__file__).resolve().parent.parent
EARLY_NS = 1_000_000
RATE_PER_PROCESS = 5000
"""Default split: one generator process per this many requests/s (measured to keep up here)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection following its share of the schedule."""

    def __init__(self, worker: _Worker, first_ns: int, interval_ns: int) -> None:
        self.worker = worker
        self.next_ns = first_ns
        self.interval_ns = interval_ns
        self.intended_ns = 0
        self.sent_ns = 0
        self.busy = False
        self.done = False
        self.status = 0
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.timer: asyncio.TimerHandle | asyncio.Handle | None = None

    def scheduled(self, end_ns: int) -> int:
        """How many requests this connection is due to send before ``end_ns`` (0: closed loop)."""
        if not self.interval_ns:
            return 0
        return max(0, math.ceil((end_ns - self.next_ns) / self.interval_ns))

    # transport side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.worker.errors += 1
            self.finish()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done:
            self.worker.errors += 1
            self.finish()

    # parser callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        now = time.monotonic_ns()
        worker = self.worker
        worker.latency.record(now - min(self.intended_ns, self.sent_ns))
        worker.service.record(now - self.sent_ns)
        worker.completed += 1
        if not 200 <= self.status < 300:
            worker.bad_status += 1
        self.busy = False
        self.next_request(now)

    # the schedule
    def next_request(self, now: int) -> None:
        worker = self.worker
        if not self.interval_ns:  # closed loop: the next request goes when this one is answered
            if now >= worker.end_ns:
                self.finish()
            else:
                self.next_ns = now
                self.send(now)
        elif self.next_ns >= worker.end_ns or now >= worker.drain_deadline_ns:
            self.finish()
        elif self.next_ns - EARLY_NS <= now:
            self.send(now)  # overdue: the previous response held it back
        else:
            self.timer = worker.loop.call_later((self.next_ns - EARLY_NS - now) / 1e9, self.on_timer)

    def on_timer(self) -> None:
        now = time.monotonic_ns()
        self.worker.lag.record(now - self.next_ns)
        self.send(now)

    def send(self, now: int) -> None:
        assert self.transport is not None
        self.intended_ns = self.next_ns
        self.next_ns += self.interval_ns
        self.sent_ns = now
        self.busy = True
        self.transport.write(self.worker.request)

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.transport.close()
        self.worker.connection_finished()


class _Worker:
    """One process's connections, histograms and counters."""

    def __init__(self, port: int, rate: float, first_connection: int, connections: int, total: int) -> None:
        self.port = port
        self.rate = rate
        self.first_connection = first_connection
        self.connections = connections
        self.total_connections = total
        self.request = (
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: benchmarks.openloop\r\n\r\n" % port
        )
        self.latency = Histogram()
        self.service = Histogram()
        self.lag = Histogram()
        self.completed = 0
        self.errors = 0
        self.bad_status = 0
        self.scheduled = 0
        self.end_ns = 0
        self.drain_deadline_ns = 0
        self.loop = asyncio.get_running_loop()
        self.conns: list[_Connection] = []
        self.all_done: asyncio.Future[None] | None = None
        self.open = 0

    async def connect(self) -> None:
        closed = self.rate <= 0
        interval_ns = 0 if closed else round(self.total_connections * 1e9 / self.rate)
        for g in range(self.first_connection, self.first_connection + self.connections):
            conn = _Connection(self, 0 if closed else round(g * 1e9 / self.rate), interval_ns)
            await self.loop.create_connection(lambda c=conn: c, "127.0.0.1", self.port)  # type: ignore[misc]
            self.conns.append(conn)

    async def run(self, t0_ns: int, duration_s: float, drain_s: float) -> None:
        self.end_ns = t0_ns + round(duration_s * 1e9)
        self.drain_deadline_ns = self.end_ns + round(drain_s * 1e9)
        self.all_done = self.loop.create_future()
        self.open = len(self.conns)
        await asyncio.sleep(max(0, t0_ns - time.monotonic_ns()) / 1e9)
        now = time.monotonic_ns()
        for conn in self.conns:
            conn.next_ns += t0_ns
            self.scheduled += conn.scheduled(self.end_ns)
            conn.next_request(now)
        if self.open:
            timeout = (self.drain_deadline_ns - time.monotonic_ns()) / 1e9 + 0.1
            try:
                await asyncio.wait_for(asyncio.shield(self.all_done), max(timeout, 0.1))
            except TimeoutError:
                for conn in list(self.conns):
                    conn.finish()

    def connection_finished(self) -> None:
        self.open -= 1
        if self.open <= 0 and self.all_done is not None and not self.all_done.done():
            self.all_done.set_result(None)

    def result(self) -> dict[str, Any]:
        return {
            "latency": self.latency.to_dict(),
            "service": self.service.to_dict(),
            "lag": self.lag.to_dict(),
            "completed": self.completed,
            "errors": self.errors,
            "bad_status": self.bad_status,
            "scheduled": self.scheduled,
        }


def _work(
    args: tuple[int, float, int, int, int, float, float],
    start: Callable[[], int],
) -> dict[str, Any]:
    """Connect, wait for the common start time from ``start()``, run, return the raw result."""
    port, rate, first, count, total, duration_s, drain_s = args
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        worker = runner.run(_make_worker(port, rate, first, count, total))
        t0 = start()
        runner.run(worker.run(t0, duration_s, drain_s))
        return worker.result()


async def _make_worker(port: int, rate: float, first: int, count: int, total: int) -> _Worker:
    worker = _Worker(port, rate, first, count, total)
    await worker.connect()
    return worker


def _child(
    args: tuple[int, float, int, int, int, float, float], ready: Any, go: Event, t0: Any, out: Any
) -> None:
    def start() -> int:
        ready.put(True)
        if not go.wait(30):
            raise RuntimeError("open-loop parent never gave the start signal")
        return int(t0.value)

    try:
        out.put(_work(args, start))
    except Exception as exc:  # reported to the parent, which raises it
        out.put({"error": repr(exc)})


def run(
    port: int,
    rate: float,
    duration_s: float,
    connections: int = 50,
    processes: int = 0,
    drain_s: float = 2.0,
) -> dict[str, Any]:
    """Offer ``rate`` requests/s to 127.0.0.1:port for ``duration_s``; return the metrics.

    ``processes`` 0 picks one per RATE_PER_PROCESS requests/s. Children are forked, so they inherit
    this process's CPU pinning.
    """
    processes = processes or max(1, math.ceil(rate / RATE_PER_PROCESS))
    processes = min(processes, connections)
    shares = [connections // processes + (i < connections % processes) for i in range(processes)]
    firsts = [sum(shares[:i]) for i in range(processes)]
    jobs = [(port, rate, firsts[i], shares[i], connections, duration_s, drain_s) for i in range(processes)]
    if processes == 1:
        raw = [_work(jobs[0], lambda: time.monotonic_ns() + 20_000_000)]
    else:
        raw = _run_children(jobs, duration_s + drain_s + 60)
    return _merge(raw, rate, duration_s)


def _run_children(
    jobs: list[tuple[int, float, int, int, int, float, float]], timeout_s: float
) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("fork")
    ready, out, go, t0 = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("q", 0)
    children = [ctx.Process(target=_child, args=(job, ready, go, t0, out), daemon=True) for job in jobs]
    for child in children:
        child.start()
    try:
        for _ in children:
            ready.get(timeout=30)
        t0.value = time.monotonic_ns() + 20_000_000
        go.set()
        raw = [out.get(timeout=timeout_s) for _ in children]
    finally:
        for child in children:
            child.join(5)
            if child.is_alive():
                child.kill()
    errors = [r["error"] for r in raw if "error" in r]
    if errors:
        raise RuntimeError(f"open-loop worker failed: {errors[0]}")
    return raw


def _merge(raw: list[dict[str, Any]], rate: float, duration_s: float) -> dict[str, Any]:
    hists = {name: Histogram() for name in ("latency", "service", "lag")}
    for part in raw:
        for name, hist in hists.items():
            hist.merge(Histogram.from_dict(part[name]))
    completed = sum(r["completed"] for r in raw)
    scheduled = sum(r["scheduled"] for r in raw)
    latency, service, lag = hists["latency"], hists["service"], hists["lag"]

    def ms(ns: float) -> float:
        return round(ns / 1e6, 4)

    spectrum = {percentile_key(q): ms(latency.percentile(q)) for q in PERCENTILES}
    achieved = completed / duration_s
    open_loop = rate > 0
    return {
        "rps": round(achieved, 1),
        "target_rps": rate if open_loop else None,
        "sustained": achieved >= 0.95 * rate if open_loop else None,
        "requests": completed,
        "errors": sum(r["errors"] + r["bad_status"] for r in raw),
        "incomplete": max(0, scheduled - completed) if open_loop else 0,
        **latency_metrics(spectrum, ms(latency.max)),
        "service_p50_ms": ms(service.percentile(50)),
        "service_p99_ms": ms(service.percentile(99)),
        "service_max_ms": ms(service.max),
        "lag_p99_ms": ms(lag.percentile(99)),
        "lag_max_ms": ms(lag.max),
        "processes": len(raw),
    }


def measure(cpu: int, port: int, rate: float, duration_s: float, connections: int) -> dict[str, Any]:
    """``run`` in a fresh process pinned to ``cpu`` (and its children with it)."""
    argv = ["taskset", "-c", str(cpu), sys.executable, "-m", "benchmarks.openloop", "--port", str(port)]
    argv += ["--rate", str(rate), "--duration", str(duration_s), "--connections", str(connections)]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 90, check=False, cwd=REPO_ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"open-loop generator failed ({done.returncode}): {done.stderr[-2000:]}")
    return cast(dict[str, Any], json.loads(done.stdout.splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--rate", type=float, required=True, help="requests/s over all connections; 0: closed loop"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--processes", type=int, default=0, help=f"0: one per {RATE_PER_PROCESS} requests/s")
    parser.add_argument("--drain", type=float, default=2.0, help="seconds allowed for the last responses")
    args = parser.parse_args(argv)
    result = run(args.port, args.rate, args.duration, args.connections, args.processes, args.drain)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
