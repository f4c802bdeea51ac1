"""Bounds on what one HTTP/2 peer may make the proxy do: the floods of recent years.

Owns the per-connection counters that turn abuse into a GOAWAY ENHANCE_YOUR_CALM (0xb):
- rapid reset (CVE-2023-44487), Envoy's premature-reset rule: a stream the client resets
  within ``PREMATURE_LIFETIME`` of its start, before a response began, is premature; the
  connection goes once premature resets reach half of ``PREMATURE_TOTAL`` streams, or, past
  that many streams, half of all streams closed (``overload.premature_reset_total_stream_count``
  500 and ``premature_reset_min_stream_lifetime_seconds`` 1 in Envoy's runtime). Pacing does not
  help an attacker: the rule counts streams, not time. The caller counts a read's resets before
  it starts that read's streams, so a stream reset in the read that opened it costs nothing;
- SETTINGS and PING floods: each demands an ACK frame; counted per interval;
- frames queued towards a peer that does not read (Envoy's ``max_outbound_frames``), checked
  by the owner against the transport's buffer.
CONTINUATION floods (CVE-2024-27316) and HPACK bombs are bounded in the codec (``decoder.py``):
h2 refuses more than 64 CONTINUATION frames per header block, and the decoded block must fit
``max_request_headers_kb`` and ``max_headers_count``.
Sans-I/O: the caller passes ``now``. Must not import asyncio or h2.
"""

from __future__ import annotations

# Per INTERVAL seconds: a client sending more SETTINGS or PING frames than this is abusive
# (generous for real clients: gRPC sends a few pings per minute).
INTERVAL = 1.0
MAX_CONTROL = 100
PREMATURE_TOTAL = 500
PREMATURE_LIFETIME = 1.0


class FloodGuard:
    """Counts events; methods returning bool return True when the peer crossed a bound."""

    __slots__ = ("_closed", "_control", "_premature", "_start", "max_control")

    def __init__(self, now: float, max_control: int = MAX_CONTROL) -> None:
        self._start = now
        self._control = 0
        self._closed = 0
        self._premature = 0
        self.max_control = max_control

    def stream_closed(self) -> None:
        """A stream of this connection finished, however it ended."""
        self._closed += 1

    def reset(self, started: float, responded: bool, now: float) -> bool:
        """The client reset a stream that began at ``started`` (``responded``: a response began).

        Only a premature reset can cross the bound (a closed stream only lowers the ratio),
        so this is the one place the rule is checked.
        """
        if responded or now - started > PREMATURE_LIFETIME:
            return False
        self._premature += 1
        twice = self._premature * 2
        return twice >= PREMATURE_TOTAL if self._closed < PREMATURE_TOTAL else twice >= self._closed

    def control(self, now: float) -> bool:
        """The client sent a SETTINGS or PING frame (each one costs us an ACK)."""
        if now - self._start >= INTERVAL:
            self._start = now
            self._control = 0
        self._control += 1
        return self._control > self.max_control
