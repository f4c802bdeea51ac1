"""Bounds on what one HTTP/2 peer may make the proxy do: the floods of recent years.

Owns the per-connection counters that turn abuse into a GOAWAY ENHANCE_YOUR_CALM (0xb):
- rapid reset (CVE-2023-44487): streams the client opens and resets before they complete,
  counted per interval; over the bound the connection goes (Envoy's premature-reset check);
- SETTINGS and PING floods: each demands an ACK frame; counted per interval;
- frames queued towards a peer that does not read (Envoy's ``max_outbound_frames``), checked
  by the owner against the transport's buffer.
CONTINUATION floods (CVE-2024-27316) are bounded in the codec: h2 refuses more than 64
CONTINUATION frames per header block, and the block must fit ``max_request_headers_bytes``.
Sans-I/O: the caller passes ``now``. Must not import asyncio or h2.
"""

from __future__ import annotations

# Per INTERVAL seconds: a client resetting more streams than this, or sending more SETTINGS or
# PING frames, is abusive (generous for real clients: gRPC sends a few pings per minute).
INTERVAL = 1.0
MAX_RESETS = 200
MAX_CONTROL = 100


class FloodGuard:
    """Counts events per interval; ``*`` methods return True when the peer crossed a bound."""

    __slots__ = ("_control", "_resets", "_start", "max_control", "max_resets")

    def __init__(self, now: float, max_resets: int = MAX_RESETS, max_control: int = MAX_CONTROL) -> None:
        self._start = now
        self._resets = 0
        self._control = 0
        self.max_resets = max_resets
        self.max_control = max_control

    def _roll(self, now: float) -> None:
        if now - self._start >= INTERVAL:
            self._start = now
            self._resets = 0
            self._control = 0

    def reset(self, now: float) -> bool:
        """The client reset a stream it opened before the stream completed."""
        self._roll(now)
        self._resets += 1
        return self._resets > self.max_resets

    def control(self, now: float) -> bool:
        """The client sent a SETTINGS or PING frame (each one costs us an ACK)."""
        self._roll(now)
        self._control += 1
        return self._control > self.max_control
