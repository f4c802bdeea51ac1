"""When to hand the allocator's free heap back to the kernel: after a burst ends (sans-I/O).

Why: a burst of connections (50 slow readers, each with up to ``per_connection_buffer_limit_bytes``
of response queued; a flood of abandoned TLS handshakes) is served from glibc's arenas. When the
connections close, Python and OpenSSL free every buffer, but glibc keeps the freed pages mapped
for reuse: resident memory stays at the burst's peak (measured: 56 MiB before 50 slow readers,
116 MiB at their peak and still 116 MiB after they left; ``malloc_trim(0)`` brought it to 55 MiB,
so nothing was still held above the allocator). ``monitors.return_free_memory`` does the trim;
this module decides when, as rules:

1. The shell reports, on each housekeeping tick, the buffer holders now (downstream connections
   plus the requests in progress: HTTP/2 multiplexes many buffered streams on one connection),
   the most there were since the previous tick (the connections' high-water mark plus the
   requests now: a burst of connections that came and went between two ticks still counts),
   and the running count of connections abandoned before a codec (failed or timed-out
   handshakes).
2. The peak of holders since the last trim is kept.
3. A trim is due when the holders fell by ``drop`` or more from that peak (a burst ended), or
   when ``abandoned`` more pre-connections were abandoned since the last trim (a handshake
   flood, which can churn without ever holding many connections at once).
4. At most one trim per ``interval`` seconds: a trim is a walk of the arenas (milliseconds for
   a heap of a few hundred MiB), so a proxy whose load comes and goes in large waves pays
   for it at a bounded rate. A due trim that the interval holds back stays due (rules 2 and 3
   keep their marks) and runs on the first tick after the interval.
5. A trim resets the marks: the peak becomes the holders now, the abandoned mark the running
   count.

Steady traffic (connections and requests at a roughly constant concurrency) never trims.
Must not import asyncio, ctypes or the OS readers; time is the ``now`` the caller passes.
"""

from __future__ import annotations

# A burst worth returning: 32 connections or streams that each held buffers of up to 1 MiB
# (Envoy's default per_connection_buffer_limit_bytes); smaller drops are ordinary churn.
DROP = 32
# Pre-connections abandoned (a handshake flood) worth returning: each held tens of KiB of
# OpenSSL state (key shares, ML-KEM keys, record buffers).
ABANDONED = 256
INTERVAL = 2.0


class MemoryTrim:
    __slots__ = ("abandoned", "drop", "interval", "_abandoned_mark", "_last", "_peak")

    def __init__(self, *, drop: int = DROP, abandoned: int = ABANDONED, interval: float = INTERVAL) -> None:
        self.drop = drop
        self.abandoned = abandoned
        self.interval = interval
        self._peak = 0
        self._abandoned_mark = 0
        self._last: float | None = None

    def due(self, now: float, holders: int, high_water: int, abandoned: int) -> bool:
        """Rules 1-5: whether to trim on this tick; True also records the trim at ``now``."""
        self._peak = max(self._peak, high_water, holders)
        # The running count is a sum over listeners: a listener removed takes its share along.
        self._abandoned_mark = min(self._abandoned_mark, abandoned)
        burst_ended = self._peak - holders >= self.drop
        flooded = abandoned - self._abandoned_mark >= self.abandoned
        if not (burst_ended or flooded):
            return False
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        self._peak = holders
        self._abandoned_mark = abandoned
        return True
