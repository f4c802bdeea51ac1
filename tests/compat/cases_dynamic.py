"""Corpus checks for dynamically configured shapes: ADS from a control plane (Envoy's
dynamic-config-cp, Emissary, Istio's sidecar over mutual TLS, Contour over mutual TLS) and
listeners and clusters from files (dynamic-config-fs).

The control plane is meshproxy's own ADS server (``controlplane.xds``: go-control-plane's
shape) on grpc.aio, serving one snapshot to the node group the file's ``node.cluster`` names;
over TLS when the file asks for it (grpcio's TLS on the server side, the server certificate
checked by its DNS name and the client's required). The snapshot holds one listener routing
to one cluster; the check passes when a request through that listener reaches the upstream.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format
from integration.harness import Proxy, cluster, eventually, http_listener, route
from prometheus_client import CollectorRegistry

import meshproxy.config.bootstrap  # noqa: F401  (registers the typed_config messages)
from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, AdsServer, Ledger, Snapshot, SnapshotCache

from .cases_http import served_by
from .corpus import Env, accepted
from .tls import leaf, make_ca

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def _served(env: Env) -> tuple[dict[str, Any], dict[str, Any]]:
    """The listener and cluster a control plane (or a file) gives the proxy: all to svc1."""
    listener = env.rewrite_resource(http_listener([route("/", "app")], name="listener_0"))
    return listener, env.rewrite_resource(cluster("app", env.ports["svc1"]))


def _served_resources(env: Env) -> dict[str, dict[str, Any]]:
    listener, app = _served(env)
    return {
        LISTENER: {"listener_0": json_format.ParseDict(listener, listener_pb2.Listener())},
        CLUSTER: {"app": json_format.ParseDict(app, cluster_pb2.Cluster())},
    }


@contextlib.asynccontextmanager
async def control_plane(
    env: Env, group: str, tls_server: str | None = None, resources: dict[str, dict[str, Any]] | None = None
) -> AsyncIterator[int]:
    """An ADS server serving ``group`` a snapshot (default: the ``_served`` listener and
    cluster); over mutual TLS with the certificate of ``tls_server`` when given. Yields its port."""
    cache = SnapshotCache()
    cache.set_snapshot(group, Snapshot("v1", resources if resources is not None else _served_resources(env)))
    server = grpc.aio.server()
    AdsServer(cache, Ledger(CollectorRegistry())).add_to_server(server)
    if tls_server is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        issued = leaf(tls_server)
        credentials = grpc.ssl_server_credentials(
            [(issued.key_pem, issued.cert_pem)],
            root_certificates=make_ca().cert_pem,
            require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def _serves_listener_0(env: Env, proxy: Proxy) -> None:
    await eventually(
        lambda: "listener_0" in proxy.server.listener_addresses(), what="the listener from xDS is up"
    )
    assert await served_by(env.port("listener_0")) == "svc1"


@accepted(
    "dynamic-config-cp",
    "the listener and cluster served over ADS (state of the world) carry a request to the upstream",
    go_control_plane="ads",
)
async def dynamic_config_cp(env: Env) -> None:
    async with control_plane(env, "test-cluster") as env.ports["ads"], env.proxy() as proxy:
        await _serves_listener_0(env, proxy)


@accepted(
    "emissary",
    "the listener and cluster served over ADS to the cluster-level HTTP/2 xds_cluster carry a request",
    **{"127__0__0__1:8003": "ads"},
)
async def emissary(env: Env) -> None:
    async with control_plane(env, "ambassador-default") as env.ports["ads"], env.proxy() as proxy:
        await _serves_listener_0(env, proxy)


@accepted(
    "istio-sidecar",
    "delta ADS over mutual TLS to istiod (its DNS SAN checked) delivers a listener that carries a "
    "request; the static 15021 listener routes /healthz/ready to the agent",
    istiod__istio_system__svc="ads",
    **{"127__0__0__1:15020": "svc2"},
)
async def istio_sidecar(env: Env) -> None:
    async with (
        control_plane(env, "productpage.default", tls_server="istiod") as env.ports["ads"],
        env.proxy() as proxy,
    ):
        await _serves_listener_0(env, proxy)
        assert await served_by(env.port("0.0.0.0_15021"), "/healthz/ready") == "svc2"


@accepted(
    "contour-ads-tls",
    "ADS over mutual TLS to the contour cluster (its DNS SAN checked) delivers a listener that "
    "carries a request",
    contour="ads",
)
async def contour_ads_tls(env: Env) -> None:
    async with (
        control_plane(env, "contour", tls_server="contour") as env.ports["ads"],
        env.proxy() as proxy,
    ):
        await _serves_listener_0(env, proxy)


@accepted(
    "dynamic-config-fs",
    "the listener and cluster in the LDS and CDS files carry a request to the upstream",
)
async def dynamic_config_fs(env: Env) -> None:
    listener, app = _served(env)
    for name, resource, type_url in (("lds.yaml", listener, LISTENER_TYPE), ("cds.yaml", app, CLUSTER_TYPE)):
        (env.tmp / name).write_text(json.dumps({"resources": [{"@type": type_url, **resource}]}))
    async with env.proxy() as proxy:
        await _serves_listener_0(env, proxy)


@accepted(
    "dynamic-eds",
    "the EDS cluster's endpoints arrive over ADS and the static listener's requests reach them",
    **{"127__0__0__1:18000": "ads"},
)
async def dynamic_eds(env: Env) -> None:
    assignment = env.rewrite_resource(cluster("app-service", env.ports["svc2"]))["load_assignment"]
    endpoints = {"app-service": json_format.ParseDict(assignment, endpoint_pb2.ClusterLoadAssignment())}
    async with (
        control_plane(env, "eds-cluster", resources={ENDPOINT: endpoints}) as env.ports["ads"],
        env.proxy() as proxy,
    ):
        runtime = proxy.server.clusters.get("app")
        await eventually(lambda: runtime is not None and bool(runtime.hosts), what="the endpoints from EDS")
        assert await served_by(env.port("ingress")) == "svc2"
