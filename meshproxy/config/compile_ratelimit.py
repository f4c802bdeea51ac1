"""Compiles the envoy.filters.http.local_ratelimit HTTP filter (LocalRateLimit) into
``policy.LocalRateLimit``.

Owns Envoy's rules for the filter-level token bucket (max_tokens > 0, fill_interval >= 50 ms),
the response status (below 400 means 429), and the runtime fractions meshproxy reads as fixed
percentages (their default_value; there is no runtime layer). Must not depend on the listener,
route or cluster compilers; ``compile_filters`` calls it for the HCM's http_filters.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lr

from meshproxy.config.compile_common import (
    Ctx,
    _header_value_option,  # the one HeaderValueOption reader; compile_common has no public name for it
    duration,
    fractional_percent,
    reject_fields,
)
from meshproxy.config.policy import LocalRateLimit

_MIN_FILL_INTERVAL = 0.050  # Envoy refuses a faster fill timer
# Each of these would limit by something other than the one shared bucket: rejected, not dropped.
_UNSUPPORTED = ("descriptors", "rate_limits", "local_cluster_rate_limit")


def local_rate_limit(msg: lr.LocalRateLimit, ctx: Ctx) -> LocalRateLimit | None:
    mark = ctx.mark()
    if not msg.stat_prefix:
        ctx.at("stat_prefix").problem("is required")
    reject_fields(
        msg, _UNSUPPORTED, ctx, "is not supported; meshproxy runs one token bucket per filter chain"
    )
    if msg.local_rate_limit_per_downstream_connection:
        ctx.at("local_rate_limit_per_downstream_connection").problem(
            "is not supported; the bucket is shared by all connections of the filter chain"
        )
    bucket, bctx = msg.token_bucket, ctx.at("token_bucket")
    if not msg.HasField("token_bucket"):
        bctx.problem("is required (per-route typed_per_filter_config is not supported)")
    elif bucket.max_tokens < 1:
        bctx.at("max_tokens").problem("must be at least 1")
    tokens_per_fill = bucket.tokens_per_fill.value if bucket.HasField("tokens_per_fill") else 1
    if tokens_per_fill < 1:
        bctx.at("tokens_per_fill").problem("must be at least 1")
    fill_interval = duration(bucket, "fill_interval", bctx, 0.0)
    if msg.HasField("token_bucket") and not bucket.HasField("fill_interval"):
        bctx.at("fill_interval").problem("is required")
    elif bucket.HasField("fill_interval") and fill_interval < _MIN_FILL_INTERVAL:
        bctx.at("fill_interval").problem(f"{fill_interval:g}s is too short; use at least 50ms")
    # Envoy: a status below 400 (or none) means 429 Too Many Requests.
    status = msg.status.code if msg.status.code >= 400 else 429
    headers = [
        option
        for entry, c in ctx.each("response_headers_to_add", msg.response_headers_to_add)
        if (option := _header_value_option(entry, c)) is not None
    ]
    enabled = _fraction(msg, "filter_enabled", ctx)
    enforced = _fraction(msg, "filter_enforced", ctx)
    if not ctx.clean_since(mark):
        return None
    return LocalRateLimit(
        stat_prefix=msg.stat_prefix,
        max_tokens=bucket.max_tokens,
        tokens_per_fill=tokens_per_fill,
        fill_interval=fill_interval,
        status=status,
        enabled_percent=enabled,
        enforced_percent=enforced,
        response_headers=tuple((h.name, h.value) for h in headers),
    )


def _fraction(msg: lr.LocalRateLimit, name: str, ctx: Ctx) -> float:
    """A RuntimeFractionalPercent's default_value as a percentage. Envoy's default when the
    field is absent is 0%: the filter neither limits nor enforces unless told to."""
    if not msg.HasField(name):
        return 0.0
    fraction: base_pb2.RuntimeFractionalPercent = getattr(msg, name)
    percent = fractional_percent(fraction.default_value, ctx.at(name).at("default_value"))
    return 0.0 if percent is None else percent.numerator * 100.0 / percent.denominator
