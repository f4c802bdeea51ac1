"""W3C Trace Context: the ``traceparent`` header, parsed and formatted.

Owns the header's grammar (https://www.w3.org/TR/trace-context/ §3.2): ``version-traceid-
parentid-flags`` in lower-case hex; version ``ff``, an all-zero trace id or parent id are
invalid; a version above ``00`` may carry more fields after a ``-``, which are ignored (§4.3).
An invalid header is treated as absent (a new trace starts). ``tracestate`` is carried on
unchanged, so it needs no parsing here. Must not import asyncio, sockets or the data plane.
"""

from __future__ import annotations

TRACEPARENT = b"traceparent"
_HEX = frozenset(b"0123456789abcdef")
_LENGTH = 55  # 2 + 1 + 32 + 1 + 16 + 1 + 2
SAMPLED = 0x01


def parse(value: bytes) -> tuple[int, int, int] | None:
    """(trace id, parent span id, trace flags) of a ``traceparent`` value, or None if invalid."""
    value = value.strip()
    if len(value) < _LENGTH or value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    version = value[:2]
    if version == b"ff" or (version == b"00" and len(value) != _LENGTH):
        return None
    if len(value) > _LENGTH and value[55:56] != b"-":
        return None
    head = value[:_LENGTH]
    if not _HEX.issuperset(head[:2] + head[3:35] + head[36:52] + head[53:]):
        return None
    trace_id = int(head[3:35], 16)
    parent_id = int(head[36:52], 16)
    if not trace_id or not parent_id:
        return None
    return trace_id, parent_id, int(head[53:], 16)


def encode(trace_id: int, span_id: int, sampled: bool) -> bytes:
    """A version ``00`` ``traceparent`` naming ``span_id`` as the parent of what follows."""
    return b"00-%032x-%016x-%s" % (trace_id, span_id, b"01" if sampled else b"00")
