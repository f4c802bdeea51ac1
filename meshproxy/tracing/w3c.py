"""W3C Trace Context: the ``traceparent`` header, parsed and formatted.

Owns the header's grammar (https://www.w3.org/TR/trace-context/ §3.2): ``version-traceid-
parentid-flags`` in lower-case hex; version ``ff``, an all-zero trace id or parent id are
invalid; a version above ``00`` may carry more fields after a ``-``, which are ignored (§4.3).
An invalid header is treated as absent (a new trace starts). ``tracestate`` is carried on
unchanged, so it needs no parsing here. Must not import asyncio, sockets or the data plane.
"""

from __future__ import annotations

import re

TRACEPARENT = b"traceparent"
SAMPLED = 0x01
_LENGTH = 55  # 2 + 1 + 32 + 1 + 16 + 1 + 2
_FORM = re.compile(rb"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


def parse(value: bytes) -> tuple[bytes, bytes, int] | None:
    """(trace id, parent span id, trace flags) of a ``traceparent`` value, the ids in hex (a
    caller that records a span converts them; one that passes the header on needs only the
    flags), or None if the value is invalid."""
    value = value.strip()
    if len(value) != _LENGTH and (len(value) < _LENGTH or value[:2] == b"00" or value[55:56] != b"-"):
        return None
    if _FORM.fullmatch(value, 0, _LENGTH) is None or value[:2] == b"ff":
        return None
    trace_id, parent_id = value[3:35], value[36:52]
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, int(value[53:55], 16)


def encode(trace_id: int, span_id: int, sampled: bool) -> bytes:
    """A version ``00`` ``traceparent`` naming ``span_id`` as the parent of what follows."""
    return b"00-%032x-%016x-%s" % (trace_id, span_id, b"01" if sampled else b"00")
