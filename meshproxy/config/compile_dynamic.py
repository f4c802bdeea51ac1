"""Compiles a Bootstrap's ``dynamic_resources`` (ADS over gRPC, or files) into ``DynamicResources``.

Owns the shapes meshproxy accepts for its xDS sources: one ``ads_config`` (``api_type`` GRPC for
state of the world, DELTA_GRPC for delta) whose single ``grpc_services`` entry names a static
cluster through ``envoy_grpc.cluster_name``, and ``lds_config`` / ``cds_config`` that say
``ads: {}``; or ``lds_config`` / ``cds_config`` that name files (``path_config_source``, Envoy's
filesystem subscriptions; ``xds/files.py``), both of them files when both are given. Every other
shape is rejected with its field path and what to write instead.
Must not depend on asyncio, sockets or the xDS client itself.
"""

from __future__ import annotations

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import config_source_pb2 as cs

from meshproxy.config.compile_common import Ctx, duration, enum_name
from meshproxy.config.model import DynamicResources

_API_TYPES = {cs.ApiConfigSource.GRPC: False, cs.ApiConfigSource.DELTA_GRPC: True}
_PATH_OR_ADS = (
    "must be {ads: {}} (listeners and clusters over the ADS stream) or "
    "{path_config_source: {path: …}} (from a file)"
)


def dynamic_resources(
    msg: bootstrap_pb2.Bootstrap.DynamicResources, ctx: Ctx, static_clusters: dict[str, str]
) -> DynamicResources | None:
    """``static_clusters`` maps each static cluster's name to its discovery type."""
    mark = ctx.mark()
    for field in ("lds_resources_locator", "cds_resources_locator"):
        if getattr(msg, field):
            ctx.at(field).problem("xdstp:// resource locators are not supported; use ads: {}")
    lds, lds_path = _source(msg, "lds_config", ctx)
    cds, cds_path = _source(msg, "cds_config", ctx)
    cluster = ""
    delta = False
    actx = ctx.at("ads_config")
    if lds_path or cds_path:
        if (lds and not lds_path) or (cds and not cds_path):
            ctx.problem(
                "lds_config and cds_config must both come over ADS or both from files "
                "(path_config_source); meshproxy does not mix them"
            )
        elif msg.HasField("ads_config"):
            actx.problem("is not used when listeners and clusters come from files; remove it")
    elif not msg.HasField("ads_config"):
        actx.problem("is required: api_type GRPC or DELTA_GRPC with one envoy_grpc service")
    else:
        ads = msg.ads_config
        if ads.api_type not in _API_TYPES:
            actx.at("api_type").problem(
                f"{enum_name(ads, 'api_type')} is not supported; use GRPC or DELTA_GRPC"
            )
        delta = _API_TYPES.get(ads.api_type, False)
        if ads.transport_api_version == cs.V2:
            actx.at("transport_api_version").problem("V2 is not supported; use V3")
        if ads.cluster_names:
            actx.at("cluster_names").problem("is for REST sources; name the cluster in grpc_services")
        if len(ads.grpc_services) != 1:
            actx.at("grpc_services").problem(
                f"needs exactly one entry (got {len(ads.grpc_services)}): "
                "{envoy_grpc: {cluster_name: ...}}"
            )
        for service, sctx in actx.each("grpc_services", ads.grpc_services[:1]):
            if service.WhichOneof("target_specifier") != "envoy_grpc":
                sctx.problem("only envoy_grpc is supported (google_grpc is not)")
                continue
            cluster = service.envoy_grpc.cluster_name
            where = sctx.at("envoy_grpc").at("cluster_name")
            if not cluster:
                where.problem("is required")
            elif cluster not in static_clusters:
                known = ", ".join(sorted(static_clusters)) or "none"
                where.problem(f'"{cluster}" is not a static cluster (static clusters: {known})')
            elif static_clusters[cluster] not in ("STATIC", "STRICT_DNS", "LOGICAL_DNS"):
                where.problem(
                    f'"{cluster}" must be a STATIC, STRICT_DNS or LOGICAL_DNS cluster '
                    "to reach the control plane"
                )
    timeout = 15.0
    for field in ("cds_config", "lds_config"):
        if msg.HasField(field) and getattr(msg, field).HasField("initial_fetch_timeout"):
            timeout = duration(getattr(msg, field), "initial_fetch_timeout", ctx.at(field), 15.0)
            break
    if not ctx.clean_since(mark):
        return None
    return DynamicResources(cluster, delta, lds, cds, timeout, lds_path, cds_path)


def _source(msg: bootstrap_pb2.Bootstrap.DynamicResources, field: str, ctx: Ctx) -> tuple[bool, str]:
    """(whether the config source is given, the file it names: "" for ADS)."""
    if not msg.HasField(field):
        return False, ""
    source: cs.ConfigSource = getattr(msg, field)
    fctx = ctx.at(field)
    if source.resource_api_version == cs.V2:
        fctx.at("resource_api_version").problem("V2 is not supported; use V3")
    kind = source.WhichOneof("config_source_specifier")
    if kind == "ads":
        return True, ""
    if kind == "path_config_source":
        pctx = fctx.at(kind)
        if source.path_config_source.HasField("watched_directory"):
            pctx.at("watched_directory").problem(
                "is not supported: meshproxy notices a replaced file itself (it polls the path every second)"
            )
        if not source.path_config_source.path:
            pctx.at("path").problem("is required")
        return True, source.path_config_source.path
    if kind == "path":  # deprecated in Envoy, still read
        return True, source.path
    fctx.at(kind or "config_source_specifier").problem(_PATH_OR_ADS)
    return False, ""
