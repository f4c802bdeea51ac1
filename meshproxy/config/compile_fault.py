"""Compiles envoy.filters.http.fault (HTTPFault) into ``filter_config.Fault``, for the filter and per route.

Owns Envoy's rules for the message: an abort is one of http_status (200..599), grpc_status or
header_abort; a delay is fixed_delay (more than 0) or header_delay; an absent percentage is
0% (the proto's default, as Envoy reads it); max_active_faults absent means no limit. The
``*_runtime`` keys name runtime overrides meshproxy has no runtime layer for (accepted, see
``fidelity.py``); response_rate_limit is refused there. Must not depend on the listener or
route compilers; ``compile_filters`` calls it.
"""

from __future__ import annotations

from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common
from envoy.extensions.filters.http.fault.v3 import fault_pb2

from meshproxy.config.compile_common import Ctx, duration, fractional_percent, header_matcher, wrapped
from meshproxy.config.filter_config import Fault, FaultAbort, FaultDelay, Percent

FAULT_NAME = "envoy.filters.http.fault"
_NONE = Percent(0)


def fault(msg: fault_pb2.HTTPFault, ctx: Ctx) -> Fault | None:
    mark = ctx.mark()
    delay = _delay(msg.delay, ctx.at("delay")) if msg.HasField("delay") else None
    abort = _abort(msg.abort, ctx.at("abort")) if msg.HasField("abort") else None
    headers = [header_matcher(h, c) for h, c in ctx.each("headers", msg.headers)]
    if not ctx.clean_since(mark):
        return None
    return Fault(
        delay=delay,
        abort=abort,
        upstream_cluster=msg.upstream_cluster,
        headers=tuple(h for h in headers if h is not None),
        downstream_nodes=tuple(msg.downstream_nodes),
        max_active_faults=wrapped(msg, "max_active_faults", None),
    )


def _percent(msg: common.FaultDelay | fault_pb2.FaultAbort, ctx: Ctx) -> Percent | None:
    return fractional_percent(msg.percentage, ctx.at("percentage")) if msg.HasField("percentage") else _NONE


def _delay(msg: common.FaultDelay, ctx: Ctx) -> FaultDelay | None:
    percent = _percent(msg, ctx)
    kind = msg.WhichOneof("fault_delay_secifier")
    if kind == "fixed_delay":
        seconds = duration(msg, "fixed_delay", ctx, 0.0)
        if seconds <= 0:
            ctx.at("fixed_delay").problem("must be more than 0")
            return None
        return None if percent is None else FaultDelay(percent, fixed=seconds)
    if kind == "header_delay":
        return None if percent is None else FaultDelay(percent, from_header=True)
    ctx.problem("a delay needs fixed_delay or header_delay")
    return None


def _abort(msg: fault_pb2.FaultAbort, ctx: Ctx) -> FaultAbort | None:
    percent = _percent(msg, ctx)
    kind = msg.WhichOneof("error_type")
    if kind == "http_status":
        if not 200 <= msg.http_status < 600:
            ctx.at("http_status").problem(f"{msg.http_status} is not an HTTP status (200..599)")
            return None
        return None if percent is None else FaultAbort(percent, http_status=msg.http_status)
    if kind == "grpc_status":
        return None if percent is None else FaultAbort(percent, grpc_status=msg.grpc_status)
    if kind == "header_abort":
        return None if percent is None else FaultAbort(percent, from_header=True)
    ctx.problem("an abort needs http_status, grpc_status or header_abort")
    return None
