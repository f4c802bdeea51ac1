"""Compiles an http_connection_manager's ``tracing`` (provider envoy.tracers.opentelemetry).

Owns reading HttpConnectionManager.Tracing and its OpenTelemetryConfig into the runtime
``Tracing``: the collector's cluster (recorded in ``Ctx.cluster_refs``, checked by whoever knows
the clusters), the service name, the export call's timeout, the span cache bound and the three
sampling percentages. Fields it does not run are refused by the fidelity table
(``meshproxy/config/fidelity.py``); a provider other than OpenTelemetry is refused here.
Must not depend on the tracer (``meshproxy/tracing/``), on asyncio or on sockets.
"""

from __future__ import annotations

from envoy.config.trace.v3 import opentelemetry_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from meshproxy.config.compile_common import Ctx, duration, type_url, unpack, wrapped
from meshproxy.config.compile_lb import percent
from meshproxy.config.model import Tracing

OPENTELEMETRY_URL = type_url(opentelemetry_pb2.OpenTelemetryConfig)
OPENTELEMETRY_NAME = "envoy.tracers.opentelemetry"


def tracing(msg: hcm.HttpConnectionManager.Tracing, ctx: Ctx) -> Tracing | None:
    """The runtime ``Tracing``; None without a provider, or (with a problem) when it cannot run."""
    mark = ctx.mark()
    provider = ctx.at("provider")
    url = msg.provider.typed_config.type_url
    if not msg.HasField("provider"):
        return None  # as in Envoy: tracing without a provider records nothing
    if url != OPENTELEMETRY_URL:
        provider.at("typed_config").problem(
            f"{url or 'no typed_config'} is not supported; meshproxy traces with {OPENTELEMETRY_NAME} "
            f"({OPENTELEMETRY_URL.rsplit('/', 1)[-1]})"
        )
        return None
    config = unpack(msg.provider.typed_config, opentelemetry_pb2.OpenTelemetryConfig)
    here = provider.at("typed_config")
    service = config.grpc_service
    if service.WhichOneof("target_specifier") != "envoy_grpc" or not service.envoy_grpc.cluster_name:
        here.at("grpc_service").problem(
            "is required: envoy_grpc.cluster_name naming the cluster of an OTLP/gRPC collector"
        )
    else:
        here.at("grpc_service").at("envoy_grpc").at("cluster_name").refer_cluster(
            service.envoy_grpc.cluster_name
        )
    cache = wrapped(config, "max_cache_size", 1024)
    if cache < 1:
        here.at("max_cache_size").problem("must be at least 1")
    sampling = {
        name: percent(getattr(msg, name).value, ctx.at(name)) if msg.HasField(name) else 100.0
        for name in ("random_sampling", "client_sampling", "overall_sampling")
    }
    timeout = duration(service, "timeout", here.at("grpc_service"), 0.0)
    if not ctx.clean_since(mark):
        return None
    return Tracing(
        collector=service.envoy_grpc.cluster_name,
        authority=service.envoy_grpc.authority,
        service_name=config.service_name,
        timeout=timeout,
        max_cache_size=cache,
        max_path_tag_length=wrapped(msg, "max_path_tag_length", 256),
        **sampling,
    )
