"""One connection manager's tracing: sampling, W3C propagation and span records, sans-I/O.

Owns ``Tracer`` (one per http_connection_manager filter chain and configuration), ``Span`` (a
request's place in its trace), ``FinishedSpan`` (what the exporter sends) and ``SpanQueue`` (the
bounded hand-off to the exporter). The exchange (``hcm/exchange.py``) calls ``begin`` when it
builds the upstream request and ``end`` when the request is over; both take ``now``
(monotonic seconds) and draw randomness from the tracer's ``rng``.

Rules:
1. Sampling: a valid incoming ``traceparent`` decides (its sampled flag is honoured, as Envoy's
   OpenTelemetry tracer does); otherwise ``x-client-trace-id`` present → ``client_sampling``,
   else ``random_sampling``; a local decision is then kept with ``overall_sampling``.
2. Propagation: every forwarded request carries a ``traceparent`` with the sampling decision,
   so the next sidecar agrees with this one: a sampled one names this hop's span (a new span
   id; the trace id of the incoming one, or a new one); an incoming unsampled one goes on
   unchanged (this hop records nothing to name); without one, a new trace id goes out
   unsampled or sampled. ``tracestate`` travels unchanged.
3. A span per request: SERVER on an inbound listener, CLIENT on an outbound one (the
   listener's ``traffic_direction``), its parent the incoming ``traceparent``'s span; a request
   answered locally before it was forwarded gets its span at the end. Only sampled spans are
   recorded.
4. Never in the way: ``SpanQueue.put`` appends or, at ``max_cache_size`` spans, drops and
   counts; the exporter drains it on its own task (``export.py``).
Cost when a request is not sampled: one header scan, one or two random draws, one header
formatted. Must not import asyncio, sockets, grpc or a codec.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from meshproxy.tracing import w3c

if TYPE_CHECKING:
    from meshproxy.config.model import Tracing
    from meshproxy.hcm.exchange import Exchange, RequestView
    from meshproxy.stats import TracingStats

CLIENT_TRACE_ID = b"x-client-trace-id"
TRACESTATE = b"tracestate"
KIND_SERVER = 2  # OTLP's Span.SpanKind
KIND_CLIENT = 3


class Span:
    """A request's place in its trace: ids, the sampling decision, and its parent's tracestate."""

    __slots__ = ("parent_id", "sampled", "span_id", "trace_id", "tracestate")

    def __init__(self, trace_id: int, span_id: int, parent_id: int, sampled: bool, tracestate: bytes) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id  # 0: a root span
        self.sampled = sampled
        self.tracestate = tracestate


# An unsampled request whose traceparent is passed on unchanged (W3C §3.2: a hop that records
# nothing may forward it): one shared value, no ids drawn.
PASSED_ON = Span(0, 0, 0, False, b"")


class FinishedSpan(NamedTuple):
    trace_id: int
    span_id: int
    parent_id: int
    kind: int
    name: str
    start_ns: int
    end_ns: int
    attributes: tuple[tuple[str, str | int], ...]
    error: bool
    tracestate: str


class SpanQueue:
    """Finished spans waiting for the exporter, at most ``limit``; ``wake`` is called when the
    first one arrives (the exporter sleeps until then)."""

    __slots__ = ("limit", "spans", "stats", "wake")

    def __init__(self, limit: int, stats: TracingStats, wake: Callable[[], None]) -> None:
        self.limit = limit
        self.stats = stats
        self.wake = wake
        self.spans: list[FinishedSpan] = []

    def put(self, span: FinishedSpan) -> None:
        spans = self.spans
        if len(spans) >= self.limit:
            self.stats.otel_spans_dropped += 1
            return
        spans.append(span)
        if len(spans) == 1:
            self.wake()

    def take(self) -> list[FinishedSpan]:
        spans = self.spans
        self.spans = []
        return spans


class Tracer:
    __slots__ = (
        "client_rate",
        "config",
        "kind",
        "overall_rate",
        "queue",
        "random_rate",
        "rng",
        "wall_offset",
    )

    def __init__(
        self, config: Tracing, outbound: bool, queue: SpanQueue, rng: random.Random, wall_offset: float
    ) -> None:
        self.config = config
        self.kind = KIND_CLIENT if outbound else KIND_SERVER
        self.queue = queue
        self.rng = rng
        self.wall_offset = wall_offset  # wall clock minus ``now``'s clock, seconds
        self.random_rate = config.random_sampling / 100.0
        self.client_rate = config.client_sampling / 100.0
        self.overall_rate = config.overall_sampling / 100.0

    def begin(self, headers: list[tuple[bytes, bytes]]) -> Span:
        """Rules 1 and 2: this request's span; ``headers`` (the upstream request's) then carry
        its ``traceparent``."""
        at = -1
        parent = None
        tracestate = b""
        client = False
        for i, (name, value) in enumerate(headers):
            if name == w3c.TRACEPARENT:
                at = i
                parent = w3c.parse(value)
            elif name == TRACESTATE:
                tracestate = value
            elif name == CLIENT_TRACE_ID:
                client = True
        rng = self.rng
        if parent is not None:
            trace_hex, parent_hex, flags = parent
            if not flags & w3c.SAMPLED:
                return PASSED_ON  # rule 2: nothing recorded here, so the header goes on as it came
            trace_id, parent_id, sampled = int(trace_hex, 16), int(parent_hex, 16), True
        else:
            trace_id, parent_id, tracestate = rng.getrandbits(128) or 1, 0, b""
            rate = self.client_rate if client else self.random_rate
            sampled = (rate >= 1.0 or rng.random() < rate) and (
                self.overall_rate >= 1.0 or rng.random() < self.overall_rate
            )
        span = Span(trace_id, rng.getrandbits(64) or 1, parent_id, sampled, tracestate)
        value = w3c.encode(trace_id, span.span_id, sampled)
        if at >= 0:
            headers[at] = (w3c.TRACEPARENT, value)
        else:
            headers.append((w3c.TRACEPARENT, value))
        return span

    def end(self, x: Exchange, stream: RequestView, protocol: str, peer: Any, now: float) -> None:
        """Rule 3: the request is over; a sampled span is queued for export (rule 4)."""
        span = x.span or self.begin(list(stream.headers))
        if not span.sampled:
            return
        status = stream.status
        path = stream.url.split(b"?", 1)[0]
        authority = stream.authority or b""
        url = (x.ctx.scheme + b"://" + authority + stream.url)[: self.config.max_path_tag_length]
        attributes: list[tuple[str, str | int]] = [
            ("component", "proxy"),
            ("http.method", stream.method.decode("latin-1")),
            ("http.url", url.decode("latin-1")),
            ("http.protocol", protocol),
            ("http.status_code", status),
            ("response_flags", stream.flags),
            ("upstream_cluster", x.cluster.config.name if x.cluster is not None else "-"),
            ("peer.address", peer.peer_label),
        ]
        if stream.request_id:
            attributes.append(("guid:x-request-id", stream.request_id.decode("latin-1")))
        tls = peer.tls
        if tls is not None:
            attributes.append(("tls.group", tls.group))
            identity = next((u for u in tls.peer_uris if u.startswith("spiffe://")), None)
            if identity is not None:
                attributes.append(("peer.spiffe_id", identity))
        offset = self.wall_offset
        self.queue.put(
            FinishedSpan(
                span.trace_id,
                span.span_id,
                span.parent_id,
                self.kind,
                (authority + path).decode("latin-1"),
                int((x.start + offset) * 1e9),
                int((now + offset) * 1e9),
                tuple(attributes),
                status >= 500 or status == 0,
                span.tracestate.decode("latin-1"),
            )
        )
