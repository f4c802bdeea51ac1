"""The W3C traceparent grammar and the tracer's sampling and propagation rules (sans-I/O)."""

from __future__ import annotations

import random

import pytest

from meshproxy.config.model import Tracing
from meshproxy.stats import TracingStats
from meshproxy.tracing import w3c
from meshproxy.tracing.tracer import KIND_CLIENT, KIND_SERVER, FinishedSpan, SpanQueue, Tracer

VALID = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE, PARENT = b"4bf92f3577b34da6a3ce929d0e0e4736", b"00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (VALID, (TRACE, PARENT, 1)),
        (b" " + VALID + b" ", (TRACE, PARENT, 1)),
        (VALID[:-2] + b"00", (TRACE, PARENT, 0)),
        (b"01" + VALID[2:] + b"-future", (TRACE, PARENT, 1)),
        (VALID + b"-extra", None),  # version 00 has exactly four fields
        (b"ff" + VALID[2:], None),
        (VALID.upper(), None),  # lower-case hex only
        (b"00-" + b"0" * 32 + VALID[35:], None),  # all-zero trace id
        (VALID[:36] + b"0" * 16 + VALID[52:], None),  # all-zero parent id
        (VALID[:-1], None),
        (b"01" + VALID[2:] + b"x", None),
    ],
)
def test_traceparent_parse(value: bytes, expected: tuple[bytes, bytes, int] | None) -> None:
    assert w3c.parse(value) == expected


def test_traceparent_encode_parses_back() -> None:
    assert w3c.parse(w3c.encode(7, 9, True)) == (b"%032x" % 7, b"%016x" % 9, 1)
    assert w3c.encode(7, 9, False).endswith(b"-00")


def _tracer(outbound: bool = False, **sampling: float) -> tuple[Tracer, SpanQueue, TracingStats]:
    stats = TracingStats()
    queue = SpanQueue(2, stats, lambda: None)
    return Tracer(Tracing("otel", **sampling), outbound, queue, random.Random(1), 0.0), queue, stats


def test_an_incoming_traceparent_decides_and_is_replaced_by_this_hops_span() -> None:
    tracer, _, _ = _tracer(random_sampling=0.0)
    headers = [(b"traceparent", VALID), (b"tracestate", b"a=1")]
    span = tracer.begin(headers)
    assert span.sampled and span.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert span.parent_id == 0x00F067AA0BA902B7 and span.tracestate == b"a=1"
    assert headers[0] == (b"traceparent", w3c.encode(span.trace_id, span.span_id, True))
    assert headers[1] == (b"tracestate", b"a=1")
    unsampled = [(b"traceparent", VALID[:-2] + b"00")]
    assert not _tracer(random_sampling=100.0)[0].begin(unsampled).sampled, "the parent's flag is honoured"
    assert unsampled == [(b"traceparent", VALID[:-2] + b"00")], "passed on unchanged"


@pytest.mark.parametrize(
    ("sampling", "client_header", "sampled"),
    [
        ({"random_sampling": 100.0}, False, True),
        ({"random_sampling": 0.0}, False, False),
        ({"random_sampling": 0.0, "client_sampling": 100.0}, True, True),
        ({"random_sampling": 100.0, "client_sampling": 0.0}, True, False),
        ({"random_sampling": 100.0, "overall_sampling": 0.0}, False, False),
    ],
)
def test_a_local_decision_follows_the_three_rates(
    sampling: dict[str, float], client_header: bool, sampled: bool
) -> None:
    tracer, _, _ = _tracer(**sampling)
    headers = [(b"x-client-trace-id", b"abc")] if client_header else []
    span = tracer.begin(headers)
    assert span.sampled is sampled and span.parent_id == 0
    assert headers[-1] == (b"traceparent", w3c.encode(span.trace_id, span.span_id, sampled))


def test_random_sampling_samples_about_its_share() -> None:
    tracer, _, _ = _tracer(random_sampling=25.0)
    share = sum(tracer.begin([]).sampled for _ in range(4000)) / 4000
    assert 0.22 < share < 0.28


def test_the_span_kind_follows_the_direction() -> None:
    assert _tracer(outbound=True)[0].kind == KIND_CLIENT
    assert _tracer(outbound=False)[0].kind == KIND_SERVER


def test_the_queue_is_bounded_and_counts_what_it_drops() -> None:
    stats = TracingStats()
    woken = []
    queue = SpanQueue(2, stats, lambda: woken.append(1))
    span = FinishedSpan(1, 2, 0, KIND_SERVER, "n", 0, 1, (), False, "")
    for _ in range(5):
        queue.put(span)
    assert len(queue.spans) == 2 and stats.otel_spans_dropped == 3
    assert woken == [1], "woken once, when the first span arrives"
    assert len(queue.take()) == 2 and queue.spans == []
    queue.put(span)
    assert woken == [1, 1]
