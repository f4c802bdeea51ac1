"""Compiles a Cluster's admission and health policy: circuit_breakers, outlier_detection (with
meshproxy's latency monitor) and health_checks, into the objects of ``policy.py``.

Owns the validation Envoy applies to these messages (percentages, required intervals and
thresholds, status ranges, hex payloads) and the schema of our one outlier-detection monitor,
``meshproxy.outlier.v1.LatencyEjection``, carried in ``outlier_detection.monitors`` as an
``xds.type.v3.TypedStruct``. Must not depend on the listener, route or cluster compilers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2 as cb
from envoy.config.cluster.v3 import outlier_detection_pb2 as od
from envoy.config.core.v3 import health_check_pb2 as hc
from google.protobuf import json_format, struct_pb2
from udpa.type.v1 import typed_struct_pb2 as udpa_typed_struct_pb2
from xds.type.v3 import typed_struct_pb2

from meshproxy.config.compile_common import Ctx, duration, enum_name, type_url, unpack, wrapped
from meshproxy.config.compile_lb import percent
from meshproxy.config.policy import (
    DEFAULT_THRESHOLDS,
    HealthCheck,
    LatencyEjection,
    OutlierDetection,
    RetryBudget,
    Thresholds,
)

LATENCY_EJECTION = "meshproxy.outlier.v1.LatencyEjection"
_TYPED_STRUCTS = (type_url(typed_struct_pb2.TypedStruct), type_url(udpa_typed_struct_pb2.TypedStruct))

# --------------------------------------------------------------------------- circuit breakers


def thresholds(msg: cb.CircuitBreakers, ctx: Ctx) -> tuple[Thresholds, ...]:
    """DEFAULT first (Envoy's defaults when not given), then HIGH when given."""
    by_priority: dict[str, Thresholds] = {}
    first: dict[str, int] = {}
    for index, (entry, c) in enumerate(ctx.each("thresholds", msg.thresholds)):
        priority = enum_name(entry, "priority")
        if priority not in ("DEFAULT", "HIGH"):
            c.at("priority").problem(f"{priority} is not a RoutingPriority; use DEFAULT or HIGH")
            continue
        if priority in first:
            c.at("priority").problem(f"{priority} is already given by thresholds[{first[priority]}]")
            continue
        first[priority] = index
        by_priority[priority] = _threshold(entry, priority, c)
    default = by_priority.get("DEFAULT", DEFAULT_THRESHOLDS)
    return (default, by_priority["HIGH"]) if "HIGH" in by_priority else (default,)


def _threshold(msg: cb.CircuitBreakers.Thresholds, priority: str, ctx: Ctx) -> Thresholds:
    budget = None
    if msg.HasField("retry_budget"):
        bctx = ctx.at("retry_budget")
        budget = RetryBudget(
            percent(msg.retry_budget.budget_percent.value, bctx.at("budget_percent"))
            if msg.retry_budget.HasField("budget_percent")
            else 20.0,
            wrapped(msg.retry_budget, "min_retry_concurrency", 3),
        )
    return Thresholds(
        priority,  # type: ignore[arg-type]  # a RoutingPriority enum name, DEFAULT or HIGH
        wrapped(msg, "max_connections", 1024),
        wrapped(msg, "max_pending_requests", 1024),
        wrapped(msg, "max_requests", 1024),
        wrapped(msg, "max_retries", 3),
        budget,
        msg.track_remaining,
    )


# --------------------------------------------------------------------------- outlier detection

_OUTLIER_COUNTS = (
    "consecutive_5xx",
    "consecutive_gateway_failure",
    "consecutive_local_origin_failure",
    "success_rate_minimum_hosts",
    "success_rate_request_volume",
    "success_rate_stdev_factor",
    "failure_percentage_minimum_hosts",
    "failure_percentage_request_volume",
)
_OUTLIER_PERCENTS = (
    "max_ejection_percent",
    "enforcing_consecutive_5xx",
    "enforcing_consecutive_gateway_failure",
    "enforcing_consecutive_local_origin_failure",
    "enforcing_success_rate",
    "enforcing_local_origin_success_rate",
    "enforcing_failure_percentage",
    "enforcing_failure_percentage_local_origin",
    "failure_percentage_threshold",
)


def outlier_detection(msg: od.OutlierDetection, ctx: Ctx) -> OutlierDetection:
    defaults = OutlierDetection()
    fields: dict[str, Any] = {name: wrapped(msg, name, getattr(defaults, name)) for name in _OUTLIER_COUNTS}
    for name in _OUTLIER_PERCENTS:
        value = fields[name] = wrapped(msg, name, getattr(defaults, name))
        if value > 100:
            ctx.at(name).problem(f"{value} is out of range; use 0..100")
    for name in ("interval", "base_ejection_time"):
        value = fields[name] = duration(msg, name, ctx, getattr(defaults, name))
        if value <= 0:
            ctx.at(name).problem("must be greater than 0")
    base = fields["base_ejection_time"]
    # Envoy: max_ejection_time defaults to 300 s or base_ejection_time, whichever is larger.
    maximum = fields["max_ejection_time"] = duration(msg, "max_ejection_time", ctx, max(300.0, base))
    if maximum < base:
        ctx.at("max_ejection_time").problem(f"{maximum:g}s is less than base_ejection_time ({base:g}s)")
    fields["split_external_local_origin_errors"] = msg.split_external_local_origin_errors
    fields["always_eject_one_host"] = msg.always_eject_one_host.value  # a BoolValue: unset is false
    latency = None
    for entry, c in ctx.each("monitors", msg.monitors):
        latency = _monitor(entry.typed_config, entry.name, c.at("typed_config"))
    return OutlierDetection(**fields, latency=latency)


def _monitor(config: Any, name: str, ctx: Ctx) -> LatencyEjection | None:
    """The one monitor meshproxy runs: a TypedStruct whose type_url names LatencyEjection and
    whose value holds LatencyEjection's fields (times in seconds, or a duration string)."""
    inner = ""
    if config.type_url in _TYPED_STRUCTS:
        typed = unpack(config, typed_struct_pb2.TypedStruct)
        inner = typed.type_url.rsplit("/", 1)[-1]
    if inner != LATENCY_EJECTION:
        what = f'"{inner or config.type_url or name}"'
        ctx.problem(
            f"monitor {what} is not supported; use an xds.type.v3.TypedStruct with type_url "
            f"type.googleapis.com/{LATENCY_EJECTION}"
        )
        return None
    return latency_ejection(typed.value, ctx.at("value"))


def latency_ejection(value: struct_pb2.Struct, ctx: Ctx) -> LatencyEjection | None:
    mark = ctx.mark()
    known = {f.name: f for f in dataclasses.fields(LatencyEjection)}
    fields: dict[str, Any] = {}
    items = json_format.MessageToDict(value)
    for key in sorted(set(items) - set(known)):
        ctx.at(key).problem(f"is not a field of {LATENCY_EJECTION}; use {', '.join(known)}")
    for key in (k for k in known if k in items):
        kctx, item = ctx.at(key), items[key]
        if key == "minimum_excess":
            fields[key] = _seconds(item, kctx)
        elif key == "threshold_factor":
            if not isinstance(item, (int, float)) or isinstance(item, bool) or item <= 1:
                kctx.problem(f"{item!r} must be a number greater than 1")
            fields[key] = item
        elif not isinstance(item, (int, float)) or isinstance(item, bool) or item != int(item) or item < 0:
            kctx.problem(f"{item!r} must be a non-negative integer")
        elif key == "enforcing" and item > 100:
            kctx.problem(f"{int(item)} is out of range; use 0..100")
        elif key in ("minimum_hosts", "request_volume") and item < 1:
            kctx.problem("must be at least 1")
        else:
            fields[key] = int(item)
    return LatencyEjection(**fields) if ctx.clean_since(mark) else None


def _seconds(item: Any, ctx: Ctx) -> float:
    """A number of seconds, or a protobuf JSON duration string ("0.010s")."""
    if isinstance(item, (int, float)) and not isinstance(item, bool) and item >= 0:
        return float(item)
    if isinstance(item, str) and item.endswith("s"):
        try:
            seconds = float(item[:-1])
        except ValueError:
            seconds = -1.0
        if seconds >= 0:
            return seconds
    ctx.problem(f'{item!r} is not a duration; give seconds as a number or a string like "0.010s"')
    return 0.0


# --------------------------------------------------------------------------- health checks

_HEALTH_CHECKERS = "http_health_check, tcp_health_check or grpc_health_check"


def health_check(msg: hc.HealthCheck, ctx: Ctx) -> HealthCheck | None:
    mark = ctx.mark()
    kind = msg.WhichOneof("health_checker")
    if kind is None:
        ctx.problem(f"a health check needs one of {_HEALTH_CHECKERS}")
    elif kind == "custom_health_check":
        ctx.at(kind).problem(f"is not supported; use {_HEALTH_CHECKERS}")
    times = {}
    for name in ("timeout", "interval"):
        times[name] = duration(msg, name, ctx, 0.0)
        if not msg.HasField(name):
            ctx.at(name).problem("is required")
        elif times[name] <= 0:
            ctx.at(name).problem("must be greater than 0")
    counts = {}
    for name in ("unhealthy_threshold", "healthy_threshold"):
        counts[name] = wrapped(msg, name, 0)
        if not msg.HasField(name):
            ctx.at(name).problem("is required")
    fields: dict[str, Any] = {}
    if kind == "http_health_check":
        fields = _http(msg.http_health_check, ctx.at(kind))
    elif kind == "tcp_health_check":
        fields = _tcp(msg.tcp_health_check, ctx.at(kind))
    elif kind == "grpc_health_check":
        check = msg.grpc_health_check
        fields = {"grpc_service_name": check.service_name, "grpc_authority": check.authority}
    no_traffic = duration(msg, "no_traffic_interval", ctx, 60.0)
    if msg.HasField("no_traffic_interval") and no_traffic <= 0:
        ctx.at("no_traffic_interval").problem("must be greater than 0")
    jitter = duration(msg, "interval_jitter", ctx, 0.0)
    if kind is None or kind == "custom_health_check" or not ctx.clean_since(mark):
        return None
    return HealthCheck(
        kind.removesuffix("_health_check"),
        times["timeout"],
        times["interval"],
        counts["unhealthy_threshold"],
        counts["healthy_threshold"],
        interval_jitter=jitter,
        interval_jitter_percent=msg.interval_jitter_percent,
        no_traffic_interval=no_traffic,
        **fields,
    )


def _http(msg: hc.HealthCheck.HttpHealthCheck, ctx: Ctx) -> dict[str, Any]:
    if not msg.path:
        ctx.at("path").problem('is required (e.g. "/healthz")')
    elif not msg.path.startswith("/") or any(c in msg.path for c in " \r\n\0"):
        ctx.at("path").problem(f'"{msg.path}" must start with "/" and hold no spaces or control characters')
    if any(c in msg.host for c in " \r\n\0"):
        ctx.at("host").problem("must not contain spaces or control characters")
    codec = enum_name(msg, "codec_client_type")
    if codec != "HTTP1":
        ctx.at("codec_client_type").problem(f"{codec} is not supported; HTTP health checks use HTTP1")
    ranges = []
    for entry, c in ctx.each("expected_statuses", msg.expected_statuses):
        if not 100 <= entry.start < entry.end <= 600:
            c.problem(f"[{entry.start}, {entry.end}) is not a status range; use 100 <= start < end <= 600")
        ranges.append((entry.start, entry.end))
    fields: dict[str, Any] = {"http_path": msg.path, "http_host": msg.host}
    if ranges:
        fields["expected_statuses"] = tuple(ranges)
    return fields


def _tcp(msg: hc.HealthCheck.TcpHealthCheck, ctx: Ctx) -> dict[str, Any]:
    send = _payload(msg.send, ctx.at("send")) if msg.HasField("send") else b""
    receive = tuple(_payload(p, c) for p, c in ctx.each("receive", msg.receive))
    return {"tcp_send": send, "tcp_receive": receive}


def _payload(msg: hc.HealthCheck.Payload, ctx: Ctx) -> bytes:
    """Envoy's Payload: ``text`` is hex-encoded ("000000FF"), ``binary`` is raw bytes."""
    kind = msg.WhichOneof("payload")
    if kind == "binary":
        return msg.binary
    if kind is None:
        ctx.problem("a payload needs text (hex) or binary")
        return b""
    try:
        return bytes.fromhex(msg.text)
    except ValueError:
        ctx.at("text").problem(f'"{msg.text}" is not hex; text payloads are hex-encoded, e.g. "000000FF"')
        return b""
