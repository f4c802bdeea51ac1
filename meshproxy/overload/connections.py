"""Active downstream connections, counted for ``global_downstream_max_connections``.

Owns the process-wide count and its limit. As in Envoy, the limit is enforced when a
connection is accepted (a proactive resource: the listener asks ``try_open`` and closes the
connection when it is refused, counting ``downstream_global_cx_overflow``), and the count is
also the monitor's reading, so actions can trigger on it. Every ``try_open`` that returned
True is paired with one ``close``. ``high_water`` is the most open at once since the last
``take_high_water`` (the memory trim's burst detector reads it each tick: a burst shorter than
a tick would otherwise go unseen).
Must not import asyncio or sockets.
"""

from __future__ import annotations


class DownstreamConnections:
    __slots__ = ("active", "high_water", "limit")

    def __init__(self, limit: int | None) -> None:
        self.active = 0
        self.high_water = 0
        self.limit = limit

    def try_open(self) -> bool:
        if self.limit is not None and self.active >= self.limit:
            return False
        self.active += 1
        if self.active > self.high_water:
            self.high_water = self.active
        return True

    def take_high_water(self) -> int:
        """The most open at once since the last call; the mark restarts from ``active``."""
        high, self.high_water = self.high_water, self.active
        return high

    def close(self) -> None:
        self.active -= 1
