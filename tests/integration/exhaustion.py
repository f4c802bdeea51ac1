"""The exhaustion suite's tools: well-behaved probers, the attack record, and the summary report.

Owns what every exhaustion test shares (``test_exhaustion.py`` for HTTP/1.1, TCP, descriptors
and TLS; ``test_exhaustion_http2.py`` for HTTP/2): a prober is a well-behaved client on a thread
(HTTP/1.1 keep-alive on ``http.client``, or HTTP/2 prior knowledge on ``h2``) whose every request
must succeed while an attack runs; ``under_attack`` samples the proxy's resident set before,
during (the peak) and after an attack and keeps one summary row per attack; ``report`` prints the
rows as a table and writes them as JSON to ``$MESHPROXY_EXHAUSTION_REPORT`` when it is set (the
figures in docs/overload.md come from there).

The proxy runs as a child process (``harness.proxy_process``): its memory and descriptors are
what is measured, so these tools are synchronous (blocking sockets, threads). Timing figures are
reported, never asserted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

from h2 import events as ev
from h2.config import H2Configuration
from h2.connection import H2Connection

from .harness import ProxyProcess

MiB = 1024 * 1024
TIMEOUT = 10.0
# Growth still resident once an attack's connections are gone, asserted after slow readers and
# handshake floods. Measured: +7 MiB at most with the trim on a burst's end; without it +27 to
# +60 MiB after slow readers (glibc keeps freed pages unless the heap's top happens to be free).
RSS_RETURNED = 16 * MiB
# ``settled_rss`` stops waiting once growth is under this: memory clearly came back.
RSS_SETTLED = 8 * MiB
# How long after an attack its memory may take to come back: the housekeeping tick (1 s) that
# sees the connection count drop, and the trim's rate limit (2 s; a trim during the attack can
# hold the next one back), with room for a busy machine.
SETTLE = 6.0
TRIM_LOG = "returned free memory after a burst"
REPORT_ENV = "MESHPROXY_EXHAUSTION_REPORT"
ROWS: list[dict[str, Any]] = []


class Prober:
    """A well-behaved HTTP/1.1 keep-alive client on a thread: one GET every ``period``.

    Every request must be answered 200; anything else (another status, a timeout, a connection
    closed under it) is an error, kept with its reason. A connection the proxy closed is
    reopened for the next request (``http.client`` does this)."""

    protocol = "HTTP/1.1"

    def __init__(self, port: int, period: float = 0.02) -> None:
        self.port = port
        self.period = period
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._conn: Any | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = self._conn
        try:
            while not self._stop.wait(self.period):
                conn = self._request(conn)
        finally:
            if conn is not None:
                conn.close()

    def _request(self, conn: Any | None) -> Any | None:
        """One GET, recorded; the connection for the next (None after a failure: a new one)."""
        started = time.monotonic()
        try:
            if conn is None:
                conn = self._connect()
            status = self._get(conn)
        except (OSError, http.client.HTTPException, ProtocolError) as err:
            self.errors.append(f"{type(err).__name__}: {err}")
            if conn is not None:
                conn.close()
            return None
        if status == 200:
            self.latencies.append(time.monotonic() - started)
        else:
            self.errors.append(f"status {status}")
        return conn

    def _connect(self) -> Any:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)

    def _get(self, conn: Any) -> int:
        conn.request("GET", "/probe", headers={"Host": "probe"})
        resp = conn.getresponse()
        resp.read()
        return int(resp.status)

    def requests_made(self, n: int) -> None:
        """Until ``n`` requests were answered or failed (bounded): an attack held that long."""
        what = f"{n} {self.protocol} prober requests"
        wait_for(lambda: len(self.latencies) + len(self.errors) >= n, what, timeout=60.0)

    def summary(self) -> dict[str, Any]:
        ms = sorted(t * 1000 for t in self.latencies)
        cuts = statistics.quantiles(ms, n=100) if len(ms) >= 2 else [ms[0] if ms else 0.0] * 99
        return {
            "protocol": self.protocol,
            "requests": len(ms) + len(self.errors),
            "errors": len(self.errors),
            "p50_ms": round(cuts[49], 1),
            "p99_ms": round(cuts[98], 1),
            "first_errors": self.errors[:3],
        }

    def __enter__(self) -> Prober:
        # The first request before the attack starts: the connection exists before any flood.
        self._conn = self._request(None)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=TIMEOUT * 2)


class ProtocolError(Exception):
    """The HTTP/2 prober's stream or connection ended without a response."""


class H2Client:
    """One prior-knowledge HTTP/2 connection on a blocking socket (the HTTP/2 prober's)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="ascii"))
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())

    def get(self, path: str) -> int:
        sid = self.h2.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "probe")]
        self.h2.send_headers(sid, headers, end_stream=True)
        self.sock.sendall(self.h2.data_to_send())
        status = 0
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ProtocolError("connection closed by the proxy")
            for event in self.h2.receive_data(data):
                if isinstance(event, ev.ResponseReceived) and event.stream_id == sid:
                    status = int(dict(event.headers)[":status"])
                elif isinstance(event, ev.DataReceived):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, ev.StreamReset) and event.stream_id == sid:
                    raise ProtocolError(f"stream reset ({event.error_code!r})")
                elif isinstance(event, ev.ConnectionTerminated):
                    raise ProtocolError(f"GOAWAY ({event.error_code!r})")
                elif isinstance(event, ev.StreamEnded) and event.stream_id == sid:
                    self.sock.sendall(self.h2.data_to_send())
                    return status
            self.sock.sendall(self.h2.data_to_send())

    def close(self) -> None:
        self.sock.close()


class H2Prober(Prober):
    """The same prober speaking HTTP/2 (prior knowledge): one connection, a stream per GET."""

    protocol = "HTTP/2"

    def _connect(self) -> Any:
        return H2Client(self.port)

    def _get(self, conn: Any) -> int:
        return int(conn.get("/probe"))


class RssSampler:
    """The proxy's resident set read every 50 ms on a thread; ``peak`` is the largest seen."""

    def __init__(self, proxy: ProxyProcess) -> None:
        self.proxy = proxy
        self.peak = proxy.rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(AssertionError, OSError):  # the child may be exiting
                self.peak = max(self.peak, self.proxy.rss_bytes())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=TIMEOUT)


def wait_for(condition: Any, what: str, timeout: float = 20.0) -> None:
    """Bounded polling of a child process (there is no event to await across processes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def settled_rss(proxy: ProxyProcess, before: int) -> int:
    """The resident set once the attack's memory came back within ``RSS_SETTLED`` of
    ``before``, or after ``SETTLE`` seconds if it did not (the caller judges that figure)."""
    with contextlib.suppress(AssertionError):
        wait_for(lambda: proxy.rss_bytes() - before < RSS_SETTLED, "memory returned", SETTLE)
    return proxy.rss_bytes()


@contextlib.contextmanager
def under_attack(name: str, proxy: ProxyProcess, *probers: Prober) -> Iterator[dict[str, Any]]:
    """Runs ``probers`` and samples RSS around the body (the attack, which must have closed its
    connections when it ends); yields the attack's summary row (the body may add details),
    which is complete once the block has ended."""
    before, logged = proxy.rss_bytes(), len(proxy.log)
    row: dict[str, Any] = {"attack": name}
    with RssSampler(proxy) as sampler, contextlib.ExitStack() as stack:
        for prober in probers:
            stack.enter_context(prober)
        yield row
        after = settled_rss(proxy, before)
    row.update(
        probers=[p.summary() for p in probers],
        rss_before_mib=round(before / MiB, 1),
        rss_peak_mib=round(max(sampler.peak, after) / MiB, 1),
        rss_after_mib=round(after / MiB, 1),
        # What each return of free memory to the kernel (overload/trim.py) gave back and cost.
        memory_trims=[line.split(": ", 1)[-1].strip() for line in proxy.log[logged:] if TRIM_LOG in line],
    )
    ROWS.append(row)
    print(json.dumps(row))


def report() -> None:
    """The summary table of every attack so far, and the JSON report when asked for."""
    if not ROWS:
        return
    lines = [
        f"{'attack':<66} {'prober':<9} {'requests':>8} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'RSS MiB before/peak/after':>26}"
    ]
    for row in ROWS:
        rss = f"{row['rss_before_mib']:.0f}/{row['rss_peak_mib']:.0f}/{row['rss_after_mib']:.0f}"
        for i, p in enumerate(row["probers"]):
            lines.append(
                f"{row['attack'] if i == 0 else '':<66} {p['protocol']:<9} {p['requests']:>8}"
                f" {p['errors']:>6} {p['p50_ms']:>7.1f} {p['p99_ms']:>7.1f} {rss if i == 0 else '':>26}"
            )
    print("\n" + "\n".join(lines))
    if path := os.environ.get(REPORT_ENV):
        with open(path, "w", encoding="utf-8") as out:
            json.dump(ROWS, out, indent=2)
