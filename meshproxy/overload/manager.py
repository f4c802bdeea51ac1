"""The overload manager's policy: resource pressures in, action states out (sans-I/O).

Owns Envoy's overload semantics, as rules:

1. Each refresh brings one reading per monitor: its pressure (value / maximum, 0..1 and
   beyond), or None when the monitor could not be read. A failed (or missing, negative, NaN)
   reading counts ``failed_updates`` and leaves that monitor's last pressure in place; a
   monitor never read has pressure 0.
2. A threshold trigger is 1 (saturated) at pressure >= its value, else 0.
3. A scaled trigger is 0 at pressure <= scaling_threshold, 1 at pressure >= saturation_threshold,
   and (pressure - scaling) / (saturation - scaling) in between.
4. An action's value is the largest of its triggers' values; it is active (saturated) at 1.
5. The state the data plane reads is derived from the action values alone (``state.py`` says
   what each value does), and is replaced whole, only when it changes.
6. The next refresh is due ``refresh_interval`` after the last (``next_update``).

Must not import asyncio, sockets, the OS readers (``monitors.py``) or protobuf; time is ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from meshproxy.overload.config import (
    DISABLE_HTTP_KEEPALIVE,
    REDUCE_TIMEOUTS,
    REJECT_INCOMING_CONNECTIONS,
    STOP_ACCEPTING_CONNECTIONS,
    STOP_ACCEPTING_REQUESTS,
    OverloadConfig,
    Trigger,
)
from meshproxy.overload.state import OverloadState
from meshproxy.overload.stats import OverloadStats


def trigger_value(trigger: Trigger, pressure: float) -> float:
    """Rules 2 and 3."""
    if trigger.saturation is None:
        return 1.0 if pressure >= trigger.threshold else 0.0
    if pressure >= trigger.saturation:
        return 1.0
    if pressure <= trigger.threshold:
        return 0.0
    return (pressure - trigger.threshold) / (trigger.saturation - trigger.threshold)


class OverloadManager:
    def __init__(self, config: OverloadConfig, stats: OverloadStats) -> None:
        self.config = config
        self.stats = stats
        self.pressure: dict[str, float] = {m.name: 0.0 for m in config.monitors}
        self.values: dict[str, float] = {a.name: 0.0 for a in config.actions}
        self._minimums = MappingProxyType({t.timer: t for a in config.actions for t in a.timer_minimums})
        self.state = OverloadState(timer_minimums=self._minimums)
        self._next_update = 0.0
        for monitor in config.monitors:
            stats.resource(monitor.name)
        for action in config.actions:
            stats.action(action.name)

    def next_update(self) -> float:
        """When the next readings are due (rule 6); 0 before the first update."""
        return self._next_update

    def update(self, readings: Mapping[str, float | None], now: float) -> OverloadState:
        """Applies one refresh's readings (rule 1) and returns the state (rules 4 and 5)."""
        for monitor in self.config.monitors:
            reading = readings.get(monitor.name)
            resource = self.stats.resource(monitor.name)
            if reading is None or not reading >= 0.0:  # NaN fails the comparison too
                resource.failed_updates += 1
                continue
            self.pressure[monitor.name] = reading
            resource.pressure = int(reading * 100)
        for action in self.config.actions:
            value = max(trigger_value(t, self.pressure[t.monitor]) for t in action.triggers)
            stats = self.stats.action(action.name)
            if value >= 1.0 and self.values[action.name] < 1.0:
                stats.activations += 1
            self.values[action.name] = value
            stats.active = int(value >= 1.0)
            stats.scale_percent = int(value * 100)
        state = OverloadState(
            accepting=self.values.get(STOP_ACCEPTING_CONNECTIONS, 0.0) < 1.0,
            reject_fraction=self.values.get(REJECT_INCOMING_CONNECTIONS, 0.0),
            keepalive_close_fraction=self.values.get(DISABLE_HTTP_KEEPALIVE, 0.0),
            shed_fraction=self.values.get(STOP_ACCEPTING_REQUESTS, 0.0),
            timer_scale=self.values.get(REDUCE_TIMEOUTS, 0.0),
            timer_minimums=self._minimums,
        )
        if state != self.state:
            self.state = state
        self._next_update = now + self.config.refresh_interval
        return self.state
