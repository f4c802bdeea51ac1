"""HTTP/2 codec micro-benchmark (issue 14): the libnghttp2 codec against its twin, h2.

``python -m benchmarks.h2_codec_micro [--seconds S] [--repeat N]`` prints, for each codec as the
proxy's downstream (a server connection built by ``new_connection``, as ``H2Peer`` builds it):

- receive: a recorded client connection (preface, SETTINGS, 100 GET requests with 8 fields each)
  fed in 16 KiB reads: events per second and microseconds per request;
- head: the same, each request block also checked and split by the codec's ``request_head``
  (what ``H2Downstream`` does before a stream exists; ``head`` less ``receive`` is its cost);
- exchange: 100 POSTs with 1 KiB bodies, each answered (headers, 1 KiB, end) and its DATA
  acknowledged, what the proxy's downstream does per request: requests per second, µs each.

The client bytes are recorded once with h2 and are the same for both codecs. Figures are
medians of ``--repeat`` interleaved rounds; the ratio is nghttp2 over h2 (issue 14 asks for 3x).
Owns no product logic; imports the two codec modules directly (no dispatcher).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes

from meshproxy.http2 import _codec_py

REQUESTS = 100
READ = 16384
SETTINGS = {
    SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
    SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
    SettingCodes.MAX_HEADER_LIST_SIZE: 60 * 1024,
    SettingCodes.HEADER_TABLE_SIZE: 4096,
}
BODY = bytes(range(256)) * 4


def _server(codec: ModuleType) -> Any:
    conn = codec.new_connection(client=False, settings=SETTINGS, max_header_list=60 * 1024, max_headers=100)
    conn.initiate_connection()
    conn.increment_flow_control_window(1 << 20)  # as H2Peer.start widens the connection window
    return conn


def record(body: bytes) -> bytes:
    """A client connection's bytes: REQUESTS requests, with ``body`` (or none: GET)."""
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.increment_flow_control_window(1 << 20)  # room for every response
    client.receive_data(_server(_codec_py).data_to_send())  # the server's windows, as the proxy opens them
    for i in range(REQUESTS):
        sid = client.get_next_available_stream_id()
        headers = [
            (b":method", b"POST" if body else b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"svc.mesh:8443"),
            (b":path", b"/api/items/%d" % i),
            (b"user-agent", b"bench/1"),
            (b"accept", b"*/*"),
            (b"x-request-id", b"%032x" % i),
            (b"content-type", b"application/json"),
        ]
        client.send_headers(sid, headers, end_stream=not body)
        if body:
            client.send_data(sid, body, end_stream=True)
    return client.data_to_send()


def receive(codec: ModuleType, data: bytes) -> Callable[[], int]:
    """One connection's requests parsed; returns the number of events."""

    def once() -> int:
        conn = _server(codec)
        events = 0
        for at in range(0, len(data), READ):
            events += len(conn.receive_data(data[at : at + READ]))
        conn.data_to_send()
        return events

    return once


def head(codec: ModuleType, data: bytes) -> Callable[[], int]:
    """``receive``, and each request block checked and split (``request_head``)."""

    def once() -> int:
        conn = _server(codec)
        events = 0
        request_head = codec.request_head
        for at in range(0, len(data), READ):
            for event in conn.receive_data(data[at : at + READ]):
                events += 1
                if type(event).__name__ == "RequestReceived":
                    request_head(event.headers, "DROP_HEADER")
        conn.data_to_send()
        return events

    return once


def exchange(codec: ModuleType, data: bytes) -> Callable[[], int]:
    """One connection's requests parsed and answered; returns the number of events."""
    response = [(b":status", b"200"), (b"content-type", b"application/json"), (b"server", b"meshproxy")]

    def once() -> int:
        conn = _server(codec)
        events = 0
        for at in range(0, len(data), READ):
            for event in conn.receive_data(data[at : at + READ]):
                events += 1
                kind = type(event).__name__
                if kind == "DataReceived":
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif kind == "StreamEnded":
                    conn.send_headers(event.stream_id, response)
                    conn.send_data(event.stream_id, BODY)
                    conn.end_stream(event.stream_id)
            conn.data_to_send()
        return events

    return once


def rate(run: Callable[[], int], seconds: float) -> tuple[float, float]:
    """(events per second, microseconds per request) of ``run`` over about ``seconds``."""
    runs = events = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        events += run()
        runs += 1
    return events / elapsed, elapsed / (runs * REQUESTS) * 1e6


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    ap.add_argument("--repeat", type=int, default=5, help="rounds; figures are medians over rounds")
    args = ap.parse_args(argv)
    from meshproxy.http2 import _codec_c  # absent when libnghttp2's headers were missing at build

    gets = record(b"")
    workloads = {"receive": (receive, gets), "head": (head, gets), "exchange": (exchange, record(BODY))}
    codecs = {"nghttp2": _codec_c, "h2": _codec_py}
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.repeat):
        for work, (make, data) in workloads.items():
            for name, codec in codecs.items():
                results.setdefault((work, name), []).append(rate(make(codec, data), args.seconds))
    cpu = platform.processor() or platform.machine()
    print(f"# {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"# medians of {args.repeat} interleaved rounds of {args.seconds:g}s; one server connection per")
    print(f"# {REQUESTS} requests, {READ}-byte reads; ratio: nghttp2 over h2 (events/s)")
    print(f"{'workload':<10} {'codec':<8} {'events/s':>10} {'µs/request':>11} {'ratio':>6}")
    for work in workloads:
        medians = {
            name: (
                statistics.median(r[0] for r in results[(work, name)]),
                statistics.median(r[1] for r in results[(work, name)]),
            )
            for name in codecs
        }
        for name, (events, micros) in medians.items():
            ratio = f"{events / medians['h2'][0]:.1f}x" if name == "nghttp2" else ""
            print(f"{work:<10} {name:<8} {events:>10.0f} {micros:>11.1f} {ratio:>6}")


if __name__ == "__main__":
    main()
