"""Compiles the upstream policy a route carries: retry_policy (route or virtual host),
hash_policy, max_stream_duration and request_mirror_policies, into the objects of ``policy.py``
and ``model.MirrorPolicy``.

Owns Envoy's rules for these messages: retry_on names, back-off bounds, the one supported host
predicate, the hash policy kinds. Must not depend on the listener or cluster compilers;
``compile_route`` calls it.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

from meshproxy.config.compile_common import (
    Ctx,
    duration,
    fractional_percent,
    header_name,
    reject_fields,
    type_url,
    wrapped,
)
from meshproxy.config.filter_config import Percent
from meshproxy.config.model import MirrorPolicy
from meshproxy.config.policy import RETRY_ON, HashPolicy, RetryPolicy

_PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
_PREVIOUS_HOSTS_URL = type_url(previous_hosts_pb2.PreviousHostsPredicate)
_HASH_KINDS = "header, cookie, connection_properties or query_parameter"
# Ignoring one of these would retry on other conditions, or other hosts, than configured.
_UNSUPPORTED_RETRY_FIELDS = ("retry_priority", "retriable_headers", "retriable_request_headers")


def retry_policy(msg: rc.RetryPolicy, ctx: Ctx) -> RetryPolicy | None:
    mark = ctx.mark()
    reject_fields(msg, _UNSUPPORTED_RETRY_FIELDS, ctx, "is not supported")
    conditions = [name.strip() for name in msg.retry_on.split(",") if name.strip()]
    for name in conditions:
        if name not in RETRY_ON:
            ctx.at("retry_on").problem(
                f'"{name}" is not a retry condition; use {", ".join(sorted(RETRY_ON))}'
            )
    codes = []
    for code, c in ctx.each("retriable_status_codes", msg.retriable_status_codes):
        if not 100 <= code <= 599:
            c.problem(f"{code} is not an HTTP status; use 100..599")
        codes.append(code)
    base, maximum = 0.025, 0.25
    if msg.HasField("retry_back_off"):
        base, maximum = _back_off(msg.retry_back_off, ctx.at("retry_back_off"))
    other_hosts = False
    for entry, c in ctx.each("retry_host_predicate", msg.retry_host_predicate):
        url = entry.typed_config.type_url
        if url == _PREVIOUS_HOSTS_URL or (not url and entry.name == _PREVIOUS_HOSTS):
            other_hosts = True
        else:
            c.problem(f'"{url or entry.name}" is not supported; use {_PREVIOUS_HOSTS}')
    attempts = msg.host_selection_retry_max_attempts or 1
    if attempts < 1:
        ctx.at("host_selection_retry_max_attempts").problem(f"{attempts} must be at least 1")
    per_try_timeout = duration(msg, "per_try_timeout", ctx, 0.0)
    per_try_idle_timeout = duration(msg, "per_try_idle_timeout", ctx, 0.0)
    if not ctx.clean_since(mark):
        return None
    return RetryPolicy(
        retry_on=frozenset(conditions),
        num_retries=wrapped(msg, "num_retries", 1),
        per_try_timeout=per_try_timeout,
        per_try_idle_timeout=per_try_idle_timeout,
        retriable_status_codes=frozenset(codes),
        base_interval=base,
        max_interval=maximum,
        # Envoy retries on any host unless the previous_hosts predicate is configured.
        retry_other_hosts=other_hosts,
        host_selection_retry_max_attempts=attempts,
    )


def _back_off(msg: rc.RetryPolicy.RetryBackOff, ctx: Ctx) -> tuple[float, float]:
    """base_interval is required and positive; max_interval defaults to 10 x base and may not
    be below it."""
    base = duration(msg, "base_interval", ctx, 0.0)
    if not msg.HasField("base_interval"):
        ctx.at("base_interval").problem("is required")
    elif base <= 0:
        ctx.at("base_interval").problem("must be greater than 0")
    maximum = duration(msg, "max_interval", ctx, 10 * base)
    if msg.HasField("max_interval") and maximum < base:
        ctx.at("max_interval").problem(f"{maximum:g}s is less than base_interval ({base:g}s)")
    return base, maximum


def hash_policy(msg: rc.RouteAction.HashPolicy, ctx: Ctx) -> HashPolicy | None:
    kind = msg.WhichOneof("policy_specifier")
    if kind == "header":
        header = msg.header
        reject_fields(
            header,
            ("regex_rewrite",),
            ctx.at(kind),
            "is not supported; meshproxy hashes the whole header value",
        )
        return _named("header", header.header_name.lower(), "header_name", msg, ctx)
    if kind == "cookie":  # ttl (generate the cookie) is refused in fidelity.py; path, attributes go with it
        return _named("cookie", msg.cookie.name, "name", msg, ctx)
    if kind == "query_parameter":
        return _named("query_parameter", msg.query_parameter.name, "name", msg, ctx)
    if kind == "connection_properties":
        if not msg.connection_properties.source_ip:
            ctx.at(kind).at("source_ip").problem("must be true (the one connection property)")
            return None
        return HashPolicy("source_ip", terminal=msg.terminal)
    if kind is None:
        ctx.problem(f"a hash policy needs one of {_HASH_KINDS}")
    else:
        ctx.at(kind).problem(f"is not supported; use {_HASH_KINDS}")
    return None


def _named(kind: str, name: str, field: str, msg: rc.RouteAction.HashPolicy, ctx: Ctx) -> HashPolicy | None:
    if not name:
        ctx.at(kind).at(field).problem("is required")
        return None
    return HashPolicy(kind, name, msg.terminal)  # type: ignore[arg-type]  # kind checked against the Literal above


def max_stream_duration(msg: rc.RouteAction.MaxStreamDuration, ctx: Ctx) -> tuple[float, float | None]:
    """(max_stream_duration, grpc_timeout_header_max): 0 means no limit; None means a
    grpc-timeout header is not honoured."""
    reject_fields(msg, ("grpc_timeout_header_offset",), ctx, "is not supported")
    limit = duration(msg, "max_stream_duration", ctx, 0.0)
    grpc_max = (
        duration(msg, "grpc_timeout_header_max", ctx, 0.0)
        if msg.HasField("grpc_timeout_header_max")
        else None
    )
    return limit, grpc_max


def mirror_policy(msg: rc.RouteAction.RequestMirrorPolicy, ctx: Ctx) -> MirrorPolicy | None:
    """A RequestMirrorPolicy; runtime_fraction absent means every request (Envoy's default)."""
    if bool(msg.cluster) == bool(msg.cluster_header):
        ctx.problem("give exactly one of cluster and cluster_header")
        return None
    if msg.cluster:
        ctx.at("cluster").refer_cluster(msg.cluster)
    elif not header_name(msg.cluster_header, ctx.at("cluster_header")):
        return None
    percent: Percent | None = Percent(100)
    if msg.HasField("runtime_fraction"):
        percent = fractional_percent(
            msg.runtime_fraction.default_value, ctx.at("runtime_fraction").at("default_value")
        )
    if percent is None:
        return None
    return MirrorPolicy(
        msg.cluster,
        percent,
        not msg.disable_shadow_host_suffix_append,
        msg.cluster_header.lower().encode("ascii"),
    )
