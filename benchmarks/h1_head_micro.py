"""HTTP/1.1 request parser micro-benchmark (issue 14): the compiled parser, its twin, httptools.

``python -m benchmarks.h1_head_micro [--seconds S] [--repeat N]`` prints, for each parser as the
proxy's downstream feeds it (16 KiB reads of one connection's pipelined requests):

- get: 100 GETs with the 9 fields a typical client and mesh sends (Host, user-agent, accept,
  x-request-id, x-forwarded-for, content-type, authorization, two x- fields);
- post: the same as POSTs with a 1 KiB Content-Length body;
- chunked: the same as POSTs with the body in two chunks and a trailer;
- response: 100 responses (200, five fields, a 64-byte body), each read whole by an upstream
  connection's response parser armed for it (``reset``), as ``upstream.py`` does.

``c`` and ``py`` are ``meshproxy.http._h1_c`` and ``_h1_py`` with a protocol that only takes the
events (the head arrives whole: method, target, Host, the framing decision and the header list);
``httptools`` is llhttp with the callbacks the proxy had before (a Python call and a tuple or line
per header, names lower-cased, the special ones told apart) and no framing checks beyond
llhttp's, so it is the floor the old path stood on, not all of its cost. Figures are medians of
``--repeat`` interleaved rounds; the ratios are c over py (issue 14 asks for 3x) and c over
httptools. Owns no product logic; imports the parser modules directly (no dispatcher).
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

import httptools

from meshproxy.http import _h1_py

REQUESTS = 100
READ = 16384
LIMIT = 60 * 1024
FIELDS = (
    b"Host: svc.mesh:8080\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n"
    b"X-Request-Id: 0123456789abcdef0123456789abcdef\r\nX-Forwarded-For: 10.0.0.1\r\n"
    b"Content-Type: application/json\r\nAuthorization: Bearer abcdefghijklmnop\r\n"
    b"X-Tenant: blue\r\nX-Trace: 1\r\n"
)
BODY = bytes(range(256)) * 4


RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: Tue, 08 Dec 2026 02:00:00 GMT\r\n"
    b"Server: upstream\r\nX-Trace: 1\r\nContent-Length: 64\r\n\r\n" + b"x" * 64
)


def record(kind: str) -> bytes:
    """One connection's pipelined requests of ``kind``."""
    out = []
    for i in range(REQUESTS):
        if kind == "get":
            out.append(b"GET /api/items/%d HTTP/1.1\r\n%b\r\n" % (i, FIELDS))
        elif kind == "post":
            out.append(
                b"POST /api/items/%d HTTP/1.1\r\n%bContent-Length: %d\r\n\r\n%b"
                % (i, FIELDS, len(BODY), BODY)
            )
        else:
            half = len(BODY) // 2
            chunks = b"%x\r\n%b\r\n%x\r\n%b\r\n0\r\nX-Sum: 1\r\n\r\n" % (half, BODY[:half], half, BODY[half:])
            out.append(
                b"POST /api/items/%d HTTP/1.1\r\n%bTransfer-Encoding: chunked\r\n\r\n%b" % (i, FIELDS, chunks)
            )
    return b"".join(out)


class Sink:
    """A RequestProtocol that keeps what the proxy keeps of each request: its head."""

    def __init__(self) -> None:
        self.heads = 0
        self.head: Any = None

    def on_message_begin(self) -> None:
        pass

    def on_head(self, head: Any) -> bool:
        self.head = head
        self.heads += 1
        return False

    def on_body(self, body: bytes) -> None:
        pass

    def on_message_complete(self) -> None:
        pass


SPECIAL = _h1_py.SPECIAL


class LlhttpSink:
    """httptools callbacks as the downstream had them: one call and one tuple per header."""

    def __init__(self) -> None:
        self.heads = 0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if SPECIAL.get(name) is None:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.heads += 1

    def on_body(self, body: bytes) -> None:
        pass

    def on_message_complete(self) -> None:
        pass


class ResponseSink:
    """A ResponseProtocol that keeps the head, as the upstream connection does."""

    def __init__(self) -> None:
        self.heads = 0
        self.head: Any = None

    def on_head(self, head: Any) -> None:
        self.head = head
        self.heads += 1

    def on_body(self, body: bytes) -> None:
        pass

    def on_message_complete(self) -> None:
        pass


class LlhttpResponseSink:
    """httptools response callbacks as the upstream connection had them: a line per header."""

    def __init__(self) -> None:
        self.heads = 0
        self.lines: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) in (2, 7, 10, 14, 16, 17) and name.lower() in SPECIAL:
            return
        self.lines.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        self.heads += 1
        self.lines = []

    def on_body(self, body: bytes) -> None:
        pass

    def on_message_complete(self) -> None:
        pass


def ours_responses(module: ModuleType) -> Callable[[], int]:
    def once() -> int:
        sink = ResponseSink()
        parser = module.ResponseParser(sink, LIMIT, 100)
        for _ in range(REQUESTS):
            parser.reset(False)
            parser.feed(RESPONSE)
        return sink.heads

    return once


def llhttp_responses() -> Callable[[], int]:
    def once() -> int:
        sink = LlhttpResponseSink()
        parser = httptools.HttpResponseParser(sink)
        for _ in range(REQUESTS):
            parser.feed_data(RESPONSE)
        return sink.heads

    return once


def ours(module: ModuleType, data: bytes) -> Callable[[], int]:
    def once() -> int:
        sink = Sink()
        parser = module.RequestParser(sink, LIMIT, 100, False)
        for at in range(0, len(data), READ):
            parser.feed(data[at : at + READ])
        return sink.heads

    return once


def llhttp(data: bytes) -> Callable[[], int]:
    def once() -> int:
        sink = LlhttpSink()
        parser = httptools.HttpRequestParser(sink)
        for at in range(0, len(data), READ):
            parser.feed_data(data[at : at + READ])
        return sink.heads

    return once


def rate(run: Callable[[], int], seconds: float) -> float:
    """Microseconds per request of ``run`` over about ``seconds``."""
    runs = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        assert run() == REQUESTS
        runs += 1
    return elapsed / (runs * REQUESTS) * 1e6


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    ap.add_argument("--repeat", type=int, default=5, help="rounds; figures are medians over rounds")
    args = ap.parse_args(argv)
    from meshproxy.http import _h1_c  # absent when the extension did not build

    workloads: dict[str, dict[str, Callable[[], int]]] = {
        kind: {"c": ours(_h1_c, data), "py": ours(_h1_py, data), "httptools": llhttp(data)}
        for kind, data in ((kind, record(kind)) for kind in ("get", "post", "chunked"))
    }
    workloads["response"] = {
        "c": ours_responses(_h1_c),
        "py": ours_responses(_h1_py),
        "httptools": llhttp_responses(),
    }
    parsers = ("c", "py", "httptools")
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):
        for work, runs in workloads.items():
            for name in parsers:
                results.setdefault((work, name), []).append(rate(runs[name], args.seconds))
    cpu = platform.processor() or platform.machine()
    print(f"# {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(
        f"# medians of {args.repeat} interleaved rounds of {args.seconds:g}s; {REQUESTS} pipelined requests"
    )
    print(f"# per connection, {READ}-byte reads; ratios: c's speed over py's, and over httptools'")
    print("# (httptools: the parse and per-header callbacks only, without this hop's checks)")
    print(f"{'workload':<9} {'c µs/rq':>8} {'py µs/rq':>9} {'httptools':>10} {'c/py':>6} {'c/httptools':>12}")
    for work in workloads:
        c, py, ll = (statistics.median(results[(work, name)]) for name in parsers)
        print(f"{work:<9} {c:>8.2f} {py:>9.2f} {ll:>10.2f} {py / c:>5.1f}x {ll / c:>11.1f}x")


if __name__ == "__main__":
    main()
