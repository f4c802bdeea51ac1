"""Compiles envoy.config.core.v3.Http2ProtocolOptions into ``model.Http2Options``.

Owns the HTTP/2 settings both sides of the proxy share (listener HCM and cluster), with the
bounds RFC 9113 §6.5.2 puts on them. Must not depend on the listener or cluster compilers.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from google.protobuf.message import Message

from meshproxy.config.compile_common import Ctx, reject_fields, type_url, unpack, wrapped
from meshproxy.config.model import DEFAULT_HTTP2, Http2Options

_MAX_WINDOW = 2**31 - 1
_MIN_WINDOW = 65535
_UNSUPPORTED = ("allow_connect", "allow_metadata", "custom_settings_parameters", "use_oghttp2_codec")


def http2_options(owner: Message, name: str, ctx: Ctx) -> Http2Options:
    """``owner.<name>`` as Http2Options (the defaults when the field is absent)."""
    if not owner.HasField(name):
        return DEFAULT_HTTP2
    return http2_message(getattr(owner, name), ctx.at(name))


def http2_message(msg: protocol_pb2.Http2ProtocolOptions, ctx: Ctx) -> Http2Options:
    reject_fields(msg, _UNSUPPORTED, ctx, "is not supported by meshproxy's HTTP/2 codec")
    d = DEFAULT_HTTP2
    streams = wrapped(msg, "max_concurrent_streams", d.max_concurrent_streams)
    stream_window = wrapped(msg, "initial_stream_window_size", d.initial_stream_window_size)
    conn_window = wrapped(msg, "initial_connection_window_size", d.initial_connection_window_size)
    frames = wrapped(msg, "max_outbound_frames", d.max_outbound_frames)
    table = wrapped(msg, "hpack_table_size", d.hpack_table_size)
    if not 1 <= streams <= _MAX_WINDOW:
        ctx.at("max_concurrent_streams").problem(f"{streams} is out of range; use 1..{_MAX_WINDOW}")
    for field, value in (
        ("initial_stream_window_size", stream_window),
        ("initial_connection_window_size", conn_window),
    ):
        if not _MIN_WINDOW <= value <= _MAX_WINDOW:
            ctx.at(field).problem(f"{value} is out of range; use {_MIN_WINDOW}..{_MAX_WINDOW}")
    if frames < 1:
        ctx.at("max_outbound_frames").problem("must be at least 1")
    return Http2Options(streams, stream_window, conn_window, frames, table)


_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def upstream_protocol(msg: cluster_pb2.Cluster, ctx: Ctx) -> tuple[Http2Options | None, bool]:
    """(HTTP/2 options or None for HTTP/1.1, use the downstream's protocol) of a cluster: the
    legacy ``http2_protocol_options`` or HttpProtocolOptions' explicit_http_config /
    use_downstream_protocol_config. (The cluster compiler reports a mistyped extension.)"""
    legacy = msg.HasField("http2_protocol_options")
    h2 = http2_message(msg.http2_protocol_options, ctx.at("http2_protocol_options")) if legacy else None
    packed = msg.typed_extension_protocol_options.get(_HTTP_OPTIONS_KEY)
    if packed is None or packed.type_url != type_url(hpo.HttpProtocolOptions):
        return h2, False
    octx = ctx.at("typed_extension_protocol_options", _HTTP_OPTIONS_KEY)
    options = unpack(packed, hpo.HttpProtocolOptions)
    kind = options.WhichOneof("upstream_protocol_options")
    if kind is not None and legacy:
        ctx.at("http2_protocol_options").problem(
            f"cannot be set both here and in {_HTTP_OPTIONS_KEY}; keep the one in {_HTTP_OPTIONS_KEY}"
        )
    if kind == "explicit_http_config":
        explicit = options.explicit_http_config
        if explicit.HasField("http2_protocol_options"):
            c = octx.at("explicit_http_config")
            return http2_message(explicit.http2_protocol_options, c.at("http2_protocol_options")), False
        return None, False
    if kind == "use_downstream_protocol_config":
        config = options.use_downstream_protocol_config
        c = octx.at("use_downstream_protocol_config")
        return http2_options(config, "http2_protocol_options", c), True
    return h2, False
