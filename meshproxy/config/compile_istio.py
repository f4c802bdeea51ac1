"""Compiles Istio's ``istio.stats`` filter (http, and network before a tcp_proxy).

Owns recognising the filter (by its name, or a TypedStruct whose ``type_url`` is Istio's
``stats.PluginConfig``: the shape istiod generates for the Wasm and native filter alike) and
reading its ``value`` into ``IstioStats``. meshproxy exports Istio's standard metrics with their
standard labels; the plugin's customisations (``metrics``, ``definitions``, ``reporter``, …) are
refused with their path, since ignoring them would export other series than asked.
Must not depend on the exporter (``meshproxy/telemetry/``), on asyncio or on sockets.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from udpa.type.v1 import typed_struct_pb2 as udpa_typed_struct
from xds.type.v3 import typed_struct_pb2 as xds_typed_struct

from meshproxy.config.compile_common import Ctx, type_url, unpack
from meshproxy.config.model import IstioStats

ISTIO_STATS_NAME = "istio.stats"
# The TypedStruct's type_url names Istio's proto, which is not compiled here (its value is a
# Struct): kept without the type-URL prefix, so it does not read as an Any type meshproxy unpacks.
PLUGIN_CONFIG = "stats.PluginConfig"
_TYPED_STRUCTS = {
    type_url(udpa_typed_struct.TypedStruct): udpa_typed_struct.TypedStruct,
    type_url(xds_typed_struct.TypedStruct): xds_typed_struct.TypedStruct,
}
_SUPPORTED = ("disable_host_header_fallback",)


def is_istio_stats(name: str, config: Any) -> bool:
    """Whether a filter entry is istio.stats: named so, or its typed_config a TypedStruct of
    ``stats.PluginConfig`` (other TypedStructs configure other filters)."""
    struct_class = _TYPED_STRUCTS.get(config.type_url)
    if struct_class is not None and _named(unpack(config, struct_class).type_url) == PLUGIN_CONFIG:
        return True
    return name == ISTIO_STATS_NAME


def _named(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


def istio_stats(config: Any, ctx: Ctx) -> IstioStats | None:
    """``config``: the entry's typed_config (an Any); ``ctx`` is at the entry."""
    here = ctx.at("typed_config")
    struct_class = _TYPED_STRUCTS.get(config.type_url)
    if struct_class is None:
        here.problem(f"is required: a TypedStruct with type_url {PLUGIN_CONFIG}")
        return None
    struct = unpack(config, struct_class)
    if _named(struct.type_url) != PLUGIN_CONFIG:
        here.at("type_url").problem(
            f"{struct.type_url or 'empty'} is not supported; meshproxy runs {PLUGIN_CONFIG} (istio.stats)"
        )
        return None
    value = json_format.MessageToDict(struct.value)
    mark = ctx.mark()
    for key in value:
        if key not in _SUPPORTED:
            here.at("value").at(key).problem(
                "is not supported: meshproxy exports Istio's standard metrics with their standard "
                "labels (docs/observability.md#istio-metrics)"
            )
    fallback = value.get("disable_host_header_fallback", False)
    if not isinstance(fallback, bool):
        here.at("value").at(_SUPPORTED[0]).problem(f"must be true or false, not {fallback!r}")
    if not ctx.clean_since(mark):
        return None
    return IstioStats(disable_host_header_fallback=fallback)
