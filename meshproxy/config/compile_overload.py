"""Compiles the bootstrap's ``overload_manager`` (envoy.config.overload.v3.OverloadManager)
into ``meshproxy.overload.config.OverloadConfig``.

Owns the validation Envoy applies (known monitor and action names, unique names, triggers
naming configured monitors, thresholds in 0..1, scaling below saturation, ScaleTimers entries)
and the refusals of what meshproxy does not run (shrink_heap, load shed points, buffer
accounting), each with its field path; and the schema of meshproxy's two monitors, carried as
a TypedStruct (xds.type.v3 or udpa.type.v1) whose type_url names
``meshproxy.overload.v1.FileDescriptors`` (``max_open_fds``: optional, default the soft
RLIMIT_NOFILE) or ``meshproxy.overload.v1.EventLoopLag`` (``max_lag``: required, seconds or a
duration string), as ``meshproxy.outlier.v1.LatencyEjection`` is.
Must not depend on the listener, route or cluster compilers, asyncio or sockets.
"""

from __future__ import annotations

from typing import Any

from envoy.config.overload.v3 import overload_pb2 as ov
from envoy.extensions.resource_monitors.downstream_connections.v3 import downstream_connections_pb2
from envoy.extensions.resource_monitors.fixed_heap.v3 import fixed_heap_pb2
from google.protobuf import json_format
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message
from xds.type.v3 import typed_struct_pb2

from meshproxy.config.compile_common import Ctx, duration, enum_name, reject_fields, type_url, unpack
from meshproxy.config.compile_upstream_policy import _TYPED_STRUCTS, _seconds
from meshproxy.overload.config import (
    ACTIONS,
    DOWNSTREAM_CONNECTIONS,
    EVENT_LOOP_LAG,
    FILE_DESCRIPTORS,
    FIXED_HEAP,
    REDUCE_TIMEOUTS,
    Action,
    Monitor,
    OverloadConfig,
    TimerMinimum,
    TimerType,
    Trigger,
)

FILE_DESCRIPTORS_CONFIG = "meshproxy.overload.v1.FileDescriptors"
EVENT_LOOP_LAG_CONFIG = "meshproxy.overload.v1.EventLoopLag"
_FIXED_HEAP_CONFIG = type_url(fixed_heap_pb2.FixedHeapConfig)
_CONNECTIONS_CONFIG = type_url(downstream_connections_pb2.DownstreamConnectionsConfig)
_SCALE_TIMERS = type_url(ov.ScaleTimersOverloadActionConfig)
# Monitor name -> what its typed_config must be (a protobuf type URL, or a TypedStruct's type).
_MONITOR_CONFIGS: dict[str, str] = {
    FIXED_HEAP: _FIXED_HEAP_CONFIG,
    DOWNSTREAM_CONNECTIONS: _CONNECTIONS_CONFIG,
    FILE_DESCRIPTORS: FILE_DESCRIPTORS_CONFIG,
    EVENT_LOOP_LAG: EVENT_LOOP_LAG_CONFIG,
}
_STRUCT_MONITORS = (FILE_DESCRIPTORS, EVENT_LOOP_LAG)
_SHRINK_HEAP = "envoy.overload_actions.shrink_heap"


def compile_overload_manager(msg: ov.OverloadManager, ctx: Ctx) -> OverloadConfig | None:
    """The overload manager's config, or None with the problems in ``ctx``."""
    mark = ctx.mark()
    reject_fields(
        msg,
        ["loadshed_points"],
        ctx,
        "load shed points are not supported; use actions with the same triggers",
    )
    reject_fields(
        msg,
        ["buffer_factory_config"],
        ctx,
        "buffer accounting is not supported (meshproxy bounds every buffer instead)",
    )
    refresh = duration(msg, "refresh_interval", ctx, 1.0)
    if msg.HasField("refresh_interval") and refresh <= 0:
        ctx.at("refresh_interval").problem("must be greater than 0")
    monitors: dict[str, Monitor] = {}
    for entry, c in ctx.each("resource_monitors", msg.resource_monitors):
        if entry.name in monitors:
            c.at("name").problem(f'"{entry.name}" is configured twice; each monitor is given once')
        elif (monitor := _monitor(entry, c)) is not None:
            monitors[monitor.name] = monitor
    actions: dict[str, Action] = {}
    for entry, c in ctx.each("actions", msg.actions):
        if entry.name in actions:
            c.at("name").problem(f'"{entry.name}" is configured twice; give each action once')
        elif (action := _action(entry, set(monitors), c)) is not None:
            actions[action.name] = action
    if not ctx.clean_since(mark):
        return None
    return OverloadConfig(refresh, tuple(monitors.values()), tuple(actions.values()))


# --------------------------------------------------------------------------- monitors


def _monitor(msg: ov.ResourceMonitor, ctx: Ctx) -> Monitor | None:
    name = msg.name
    if name not in _MONITOR_CONFIGS:
        what = f'"{name}" is not a resource monitor meshproxy runs' if name else "is required"
        ctx.at("name").problem(f"{what}; use one of {', '.join(_MONITOR_CONFIGS)}")
        return None
    if not msg.HasField("typed_config"):
        ctx.at("typed_config").problem(f"is required: {name} is configured by {_MONITOR_CONFIGS[name]}")
        return None
    tctx = ctx.at("typed_config")
    config = msg.typed_config
    maximum: float | None
    if name == FIXED_HEAP and config.type_url == _FIXED_HEAP_CONFIG:
        maximum = unpack(config, fixed_heap_pb2.FixedHeapConfig).max_heap_size_bytes
        _positive(maximum, tctx.at("max_heap_size_bytes"))
    elif name == DOWNSTREAM_CONNECTIONS and config.type_url == _CONNECTIONS_CONFIG:
        maximum = unpack(
            config, downstream_connections_pb2.DownstreamConnectionsConfig
        ).max_active_downstream_connections
        _positive(maximum, tctx.at("max_active_downstream_connections"))
    elif name in (FILE_DESCRIPTORS, EVENT_LOOP_LAG) and _struct_type(config) == _MONITOR_CONFIGS[name]:
        maximum = _struct_maximum(name, _typed_struct(config).value, tctx.at("value"))
    else:
        got = _struct_type(config) or config.type_url
        hint = (
            "a TypedStruct with type_url type.googleapis.com/"
            if name in (FILE_DESCRIPTORS, EVENT_LOOP_LAG)
            else ""
        )
        tctx.problem(f'"{got}" does not configure {name}; use {hint}{_MONITOR_CONFIGS[name]}')
        return None
    return Monitor(name, maximum)


def _positive(value: float, ctx: Ctx) -> None:
    if value <= 0:
        ctx.problem("must be greater than 0")


def _typed_struct(config: AnyProto) -> typed_struct_pb2.TypedStruct:
    """``config`` read as a TypedStruct: udpa.type.v1's and xds.type.v3's are the same message
    under two names, so the bytes are parsed (``Any.Unpack`` would refuse the other name)."""
    return typed_struct_pb2.TypedStruct.FromString(config.value)


def _struct_type(config: AnyProto) -> str:
    """The message a TypedStruct says it holds, or "" when ``config`` is no TypedStruct."""
    if config.type_url not in _TYPED_STRUCTS:
        return ""
    return _typed_struct(config).type_url.rsplit("/", 1)[-1]


def _struct_maximum(name: str, value: Message, ctx: Ctx) -> float | None:
    """FileDescriptors' ``max_open_fds`` (optional) or EventLoopLag's ``max_lag`` (required)."""
    key = "max_open_fds" if name == FILE_DESCRIPTORS else "max_lag"
    items: dict[str, Any] = json_format.MessageToDict(value)
    for unknown in sorted(set(items) - {key}):
        ctx.at(unknown).problem(f"is not a field of {_MONITOR_CONFIGS[name]}; use {key}")
    if key not in items:
        if name == EVENT_LOOP_LAG:
            ctx.at(key).problem('is required (e.g. "0.5s")')
        return None
    item, kctx = items[key], ctx.at(key)
    if name == EVENT_LOOP_LAG:
        mark = kctx.mark()
        seconds = _seconds(item, kctx)
        if kctx.clean_since(mark):
            _positive(seconds, kctx)
        return seconds
    if not isinstance(item, (int, float)) or isinstance(item, bool) or item != int(item) or item < 1:
        kctx.problem(f"{item!r} must be a positive integer")
        return None
    return float(item)


# --------------------------------------------------------------------------- actions


def _action(msg: ov.OverloadAction, monitors: set[str], ctx: Ctx) -> Action | None:
    mark = ctx.mark()
    if msg.name == _SHRINK_HEAP:
        ctx.at("name").problem(
            "shrink_heap is not supported: CPython keeps freed memory in its own arenas and "
            "cannot return it on demand; use stop_accepting_requests or reduce_timeouts"
        )
    elif msg.name not in ACTIONS:
        what = f'"{msg.name}" is not an overload action meshproxy runs' if msg.name else "is required"
        ctx.at("name").problem(f"{what}; use one of {', '.join(ACTIONS)}")
    if not msg.triggers:
        ctx.at("triggers").problem("an action needs at least one trigger")
    triggers: list[Trigger] = []
    seen: dict[str, int] = {}
    for index, (entry, c) in enumerate(ctx.each("triggers", msg.triggers)):
        if entry.name in seen:
            c.at("name").problem(
                f'"{entry.name}" already triggers this action in triggers[{seen[entry.name]}]'
            )
            continue
        seen[entry.name] = index
        if (trigger := _trigger(entry, monitors, c)) is not None:
            triggers.append(trigger)
    minimums: tuple[TimerMinimum, ...] = ()
    if msg.name == REDUCE_TIMEOUTS:
        minimums = _scale_timers(msg, ctx.at("typed_config"))
    elif msg.HasField("typed_config"):
        ctx.at("typed_config").problem(f"{msg.name or 'this action'} takes no typed_config; remove it")
    if not ctx.clean_since(mark):
        return None
    return Action(msg.name, tuple(triggers), minimums)


def _trigger(msg: ov.Trigger, monitors: set[str], ctx: Ctx) -> Trigger | None:
    mark = ctx.mark()
    if msg.name not in monitors:
        configured = ", ".join(sorted(monitors)) or "none"
        ctx.at("name").problem(
            f'"{msg.name}" is not a configured resource monitor (configured: {configured})'
        )
    kind = msg.WhichOneof("trigger_oneof")
    if kind is None:
        ctx.problem("a trigger needs threshold or scaled")
        return None
    if kind == "threshold":
        _unit(msg.threshold.value, ctx.at("threshold").at("value"))
        trigger = Trigger(msg.name, msg.threshold.value)
    else:
        sctx = ctx.at("scaled")
        low, high = msg.scaled.scaling_threshold, msg.scaled.saturation_threshold
        _unit(low, sctx.at("scaling_threshold"))
        _unit(high, sctx.at("saturation_threshold"))
        if low >= high:
            sctx.problem(f"scaling_threshold ({low:g}) must be less than saturation_threshold ({high:g})")
        trigger = Trigger(msg.name, low, high)
    return trigger if ctx.clean_since(mark) else None


def _unit(value: float, ctx: Ctx) -> None:
    if not 0.0 <= value <= 1.0:
        ctx.problem(f"{value:g} is out of range; use 0..1 (a fraction of the monitor's maximum)")


def _scale_timers(msg: ov.OverloadAction, ctx: Ctx) -> tuple[TimerMinimum, ...]:
    if msg.typed_config.type_url != _SCALE_TIMERS:
        got = f'"{msg.typed_config.type_url}"' if msg.HasField("typed_config") else "nothing"
        ctx.problem(f"reduce_timeouts is configured by {_SCALE_TIMERS}; got {got}")
        return ()
    config = unpack(msg.typed_config, ov.ScaleTimersOverloadActionConfig)
    if not config.timer_scale_factors:
        ctx.at("timer_scale_factors").problem("give at least one timer to scale")
    minimums: dict[str, TimerMinimum] = {}
    for entry, c in ctx.each("timer_scale_factors", config.timer_scale_factors):
        timer = enum_name(entry, "timer")
        if timer not in _TIMERS:
            c.at("timer").problem(f"{timer} is not a timer; use one of {', '.join(_TIMERS)}")
            continue
        if timer in minimums:
            c.at("timer").problem(f"{timer} is given twice")
            continue
        adjust = entry.WhichOneof("overload_adjust")
        if adjust == "min_timeout":
            minimums[timer] = TimerMinimum(timer, min_timeout=duration(entry, "min_timeout", c, 0.0))
        elif adjust == "min_scale":
            value = entry.min_scale.value
            if not 0.0 <= value <= 100.0:
                c.at("min_scale").at("value").problem(f"{value:g} is out of range; use 0..100")
            minimums[timer] = TimerMinimum(timer, min_scale=value / 100.0)
        else:
            c.problem("a timer needs min_timeout or min_scale")
    return tuple(minimums.values())


_TIMERS: tuple[TimerType, ...] = (
    "HTTP_DOWNSTREAM_CONNECTION_IDLE",
    "HTTP_DOWNSTREAM_STREAM_IDLE",
    "TRANSPORT_SOCKET_CONNECT",
    "HTTP_DOWNSTREAM_CONNECTION_MAX",
    "HTTP_DOWNSTREAM_STREAM_FLUSH",
)
