"""The overload manager's I/O shell: samples the monitors every refresh_interval, feeds the
core, and publishes the state the data plane reads.

Owns the refresh timer, the event-loop lag measurement (how late the refresh timer itself
fired: a loop blocked for 300 ms wakes the timer 300 ms late) and the subscribers told of each
new state. The data plane holds the runtime and reads ``runtime.state`` (one attribute) per
connection and request; ``runtime.connections`` is the global downstream connection count.
Holds no policy: every decision is ``manager.py``'s, every measurement ``monitors.py``'s.
Must not depend on the listener or HTTP code (they depend on this).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from meshproxy.overload.config import DOWNSTREAM_CONNECTIONS, OverloadConfig
from meshproxy.overload.connections import DownstreamConnections
from meshproxy.overload.manager import OverloadManager
from meshproxy.overload.monitors import read_pressure
from meshproxy.overload.state import OverloadState
from meshproxy.overload.stats import OverloadStats

log = logging.getLogger("meshproxy.overload")


class OverloadRuntime:
    def __init__(self, config: OverloadConfig | None, stats: OverloadStats | None = None) -> None:
        self.config = config if config is not None else OverloadConfig()
        self.stats = stats if stats is not None else OverloadStats()
        self.manager = OverloadManager(self.config, self.stats)
        self.state: OverloadState = self.manager.state
        limit = next((m.maximum for m in self.config.monitors if m.name == DOWNSTREAM_CONNECTIONS), None)
        self.connections = DownstreamConnections(None if limit is None else int(limit))
        self._subscribers: list[Callable[[OverloadState], None]] = []
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, callback: Callable[[OverloadState], None]) -> None:
        """``callback(state)`` after each change of state (a listener pausing its accepts)."""
        self._subscribers.append(callback)

    def start(self) -> None:
        """Starts refreshing, on the running loop; without monitors there is nothing to do."""
        if self.config.monitors and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="overload manager")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        lag = 0.0
        while True:
            self.refresh(lag, loop.time())
            due = self.manager.next_update()
            await asyncio.sleep(max(0.0, due - loop.time()))
            lag = max(0.0, loop.time() - due)

    def refresh(self, loop_lag: float, now: float) -> None:
        """One refresh: read every monitor, update the core, publish a changed state."""
        readings: dict[str, float | None] = {}
        for monitor in self.config.monitors:
            try:
                readings[monitor.name] = read_pressure(
                    monitor, loop_lag=loop_lag, connections=self.connections.active
                )
            except (OSError, ValueError) as err:
                log.debug("overload monitor %s: cannot read: %s", monitor.name, err)
                readings[monitor.name] = None
        state = self.manager.update(readings, now)
        if state is self.state:
            return
        self.state = state
        log.warning(
            "overload state: %s",
            ", ".join(f"{name}={value:.2f}" for name, value in self.manager.values.items()),
        )
        for callback in self._subscribers:
            try:
                callback(state)
            except Exception:  # a broken subscriber must not stop the overload manager
                log.exception("overload state subscriber %r failed", callback)
