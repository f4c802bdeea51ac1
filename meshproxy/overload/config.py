"""The overload manager as configured: resource monitors, triggers and actions.

Owns the frozen shape of Envoy's ``overload_manager`` bootstrap field after compilation
(``config/compile_overload.py`` builds it; ``manager.py`` and ``runtime.py`` read it), and the
names meshproxy accepts for monitors, actions and scaled timers. Times are seconds.
Must not import asyncio, sockets or generated protobuf code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Resource monitors: Envoy's extension names where Envoy has the monitor, meshproxy's own else.
FIXED_HEAP = "envoy.resource_monitors.fixed_heap"
DOWNSTREAM_CONNECTIONS = "envoy.resource_monitors.global_downstream_max_connections"
FILE_DESCRIPTORS = "meshproxy.resource_monitors.file_descriptors"
EVENT_LOOP_LAG = "meshproxy.resource_monitors.event_loop_lag"
MonitorName = Literal[
    "envoy.resource_monitors.fixed_heap",
    "envoy.resource_monitors.global_downstream_max_connections",
    "meshproxy.resource_monitors.file_descriptors",
    "meshproxy.resource_monitors.event_loop_lag",
]

# Overload actions (Envoy's names).
STOP_ACCEPTING_REQUESTS = "envoy.overload_actions.stop_accepting_requests"
DISABLE_HTTP_KEEPALIVE = "envoy.overload_actions.disable_http_keepalive"
STOP_ACCEPTING_CONNECTIONS = "envoy.overload_actions.stop_accepting_connections"
REJECT_INCOMING_CONNECTIONS = "envoy.overload_actions.reject_incoming_connections"
REDUCE_TIMEOUTS = "envoy.overload_actions.reduce_timeouts"
ACTIONS = (
    STOP_ACCEPTING_REQUESTS,
    DISABLE_HTTP_KEEPALIVE,
    STOP_ACCEPTING_CONNECTIONS,
    REJECT_INCOMING_CONNECTIONS,
    REDUCE_TIMEOUTS,
)

# ScaleTimersOverloadActionConfig.TimerType, UNSPECIFIED excluded.
TimerType = Literal[
    "HTTP_DOWNSTREAM_CONNECTION_IDLE",
    "HTTP_DOWNSTREAM_STREAM_IDLE",
    "TRANSPORT_SOCKET_CONNECT",
    "HTTP_DOWNSTREAM_CONNECTION_MAX",
    "HTTP_DOWNSTREAM_STREAM_FLUSH",
]


@dataclass(frozen=True, slots=True)
class Monitor:
    """One resource monitor; pressure = measured value / ``maximum``.

    ``maximum`` is bytes of resident memory (fixed_heap), active downstream connections,
    open file descriptors (None: the soft RLIMIT_NOFILE at each reading), or seconds of
    event-loop lag.
    """

    name: MonitorName
    maximum: float | None


@dataclass(frozen=True, slots=True)
class Trigger:
    """Envoy's Trigger: ``threshold`` alone (ThresholdTrigger: saturated at pressure >=
    threshold, else 0), or ``threshold`` as scaling_threshold with ``saturation`` (ScaledTrigger:
    0 up to the scaling threshold, then linear to 1 at the saturation threshold)."""

    monitor: MonitorName
    threshold: float
    saturation: float | None = None


@dataclass(frozen=True, slots=True)
class TimerMinimum:
    """ScaleTimersOverloadActionConfig.ScaleTimer: the shortest a ``timer`` may be scaled to,
    as seconds (``min_timeout``) or as a fraction 0..1 of its configured value (``min_scale``)."""

    timer: TimerType
    min_timeout: float | None = None
    min_scale: float | None = None


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    triggers: tuple[Trigger, ...]
    # reduce_timeouts only.
    timer_minimums: tuple[TimerMinimum, ...] = ()


@dataclass(frozen=True, slots=True)
class OverloadConfig:
    refresh_interval: float = 1.0
    monitors: tuple[Monitor, ...] = ()
    actions: tuple[Action, ...] = ()
