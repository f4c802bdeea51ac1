"""Tracing's and Istio metrics' cost per request (issue 15): what the exchange's hooks add.

``python -m benchmarks.observe_micro [--requests N] [--repeat R]`` times, per request, the work
``Exchange`` does when its chain traces (``Tracer.begin`` on the upstream request's headers,
``Tracer.end`` when it is over) for three configurations, each paired in the same round against
the same loop without tracing (what an untraced chain runs: the two ``if ctx.tracer`` tests):

- ``unsampled``: random_sampling 0, no incoming traceparent (a new trace id, propagated
  unsampled: the common case of a low sampling rate);
- ``unsampled_parent``: an incoming traceparent whose sampled flag is 0;
- ``sampled``: random_sampling 100 (a span recorded and queued; the queue is emptied between
  rounds, as the exporter's task would, and its export is not on the request path);
- ``istio_metrics``: the istio.stats filter's ``HttpReporter.request`` on an inbound chain (a
  mutual-TLS peer with a SPIFFE ID: the label set built, its series found, three histograms).

Times are the process's CPU time (``time.process_time``: on a shared machine the wall clock also
counts the time other processes held the core). Figures are medians of ``--repeat`` interleaved
rounds of the added microseconds per request
(traced minus untraced, same round). The request is a realistic HTTP/1.1 GET with 8 headers,
with the finished stream and the downstream peer the hooks read. Owns no product logic.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from types import SimpleNamespace
from typing import Any

from meshproxy.config.model import IstioStats, Tracing
from meshproxy.stats import TracingStats
from meshproxy.telemetry.istio import HttpReporter, IstioMetrics
from meshproxy.tracing.tracer import SpanQueue, Tracer

HEADERS = [
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip"),
    (b"x-b3-ignored", b"1"),
    (b"cookie", b"session=abc"),
    (b"content-type", b"application/json"),
    (b"x-custom", b"value"),
    (b"cache-control", b"no-cache"),
]
PARENT = (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")


def _fixture() -> tuple[Any, Any, Any]:
    stream = SimpleNamespace(
        method=b"GET", url=b"/api/items?page=2", authority=b"backend.shop.svc:8080", headers=HEADERS,
        request_id=b"5f1c2b9e-0000-4000-8000-000000000001", status=200, flags="-", rx_bytes=0, tx_bytes=120,
    )  # fmt: skip
    cluster = SimpleNamespace(config=SimpleNamespace(name="outbound|8080||backend.shop.svc"))
    x = SimpleNamespace(span=None, start=100.0, cluster=cluster, ctx=SimpleNamespace(scheme=b"http"))
    tls = SimpleNamespace(
        group="X25519MLKEM768", peer_chain=(object(),), peer_uris=("spiffe://mesh.local/ns/shop/sa/frontend",)
    )
    x.host = None
    peer = SimpleNamespace(peer_label="10.0.0.7:40000", tls=tls)
    return stream, x, peer


def _loop(tracer: Tracer | None, queue: SpanQueue | None, requests: int, parent: bool) -> float:
    """Seconds for ``requests`` requests' hooks (the untraced loop when ``tracer`` is None)."""
    stream, x, peer = _fixture()
    ctx = SimpleNamespace(tracer=tracer)
    started = time.process_time()
    for _ in range(requests):
        headers = [*HEADERS, PARENT] if parent else list(HEADERS)
        x.span = None
        if ctx.tracer is not None and x.span is None:
            x.span = ctx.tracer.begin(headers)
        if ctx.tracer is not None:
            ctx.tracer.end(x, stream, "HTTP/1.1", peer, 100.001)  # type: ignore[arg-type]
    elapsed = time.process_time() - started
    if queue is not None:
        queue.take()
    return elapsed


def _istio_loop(reporter: HttpReporter | None, requests: int) -> float:
    """Seconds for ``requests`` requests' Istio hook (the untraced loop's test when None)."""
    stream, x, peer = _fixture()
    ctx = SimpleNamespace(istio=reporter)
    started = time.process_time()
    for _ in range(requests):
        if ctx.istio is not None:
            ctx.istio.request(x, stream, peer, 100.001)  # type: ignore[arg-type]
    return time.process_time() - started


def measure(requests: int, repeat: int) -> dict[str, float]:
    cases = {"unsampled": (0.0, False), "unsampled_parent": (100.0, True), "sampled": (100.0, False)}
    added: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, (rate, parent) in cases.items():
            queue = SpanQueue(requests + 1, TracingStats(), lambda: None)
            tracer = Tracer(Tracing("otel", random_sampling=rate), True, queue, random.Random(1), 0.0)
            base = _loop(None, None, requests, parent)
            traced = _loop(tracer, queue, requests, parent)
            added[name].append((traced - base) / requests * 1e6)
        reporter = HttpReporter(IstioStats(), IstioMetrics(), True, None)
        base = _istio_loop(None, requests)
        added.setdefault("istio_metrics", []).append(
            (_istio_loop(reporter, requests) - base) / requests * 1e6
        )
    return {name: statistics.median(values) for name, values in added.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(
        f"Python {platform.python_version()} on {platform.machine()}; {args.repeat} rounds of {args.requests}"
    )
    for name, us in measure(args.requests, args.repeat).items():
        print(f"{name:18s} +{us:.2f} us/request")


if __name__ == "__main__":
    main()
