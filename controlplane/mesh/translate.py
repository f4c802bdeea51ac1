"""The mesh model translated into Envoy resources, one resource set per node group.

Owns which resources each group is served:

- a **sidecar group** (the meshproxy instances whose ``node.cluster`` is the group's name: the
  service's name, or ``<service>-<version>`` for a sidecar declared on a version) gets
  - an ``inbound`` listener on the sidecar's inbound address when it has one and the service
    admits anyone: PQ mutual TLS (``DownstreamTlsContext``, client certificate required, SAN
    matchers = the service's ``allow``), then HTTP (or TCP) to the ``local_app`` cluster;
  - for every service whose ``allow`` admits this service's identity, an outbound listener
    ``outbound|<service>`` on ``sidecars.outbound_address:<port>`` (HTTP with RDS over ADS, or
    tcp_proxy), the service's RouteConfiguration, one EDS cluster per version (PQ mTLS with a
    SAN match on the callee's identity when the callee has a sidecar, plaintext otherwise) and
    its ClusterLoadAssignment;
- the **default group** (proxyless gRPC clients, and any node of no known group) gets for every
  HTTP/gRPC service that admits some caller two ``api_listener`` Listeners, ``<service>`` and
  ``<service>:<port>`` (an ``xds:///`` target names one of them), HCM with RDS over ADS, the
  RouteConfiguration, plaintext EDS clusters and their endpoints.

Every sidecar HTTP connection manager (inbound and outbound) hardens the request path as
Istio's sidecars do by default: ``normalize_path: true`` (Istio's default path normalisation,
``BASE``: RFC 3986 dot segments and unreserved percent-encodings, so ``/x/../admin`` and
``/%61dmin`` match routes as ``/admin``; ``merge_slashes`` and escaped-slash handling stay off,
as in Istio's ``BASE``, because they change what the application receives), and
``request_headers_timeout: 10s`` (a request head must complete within 10 s: slowloris). The
proxyless api_listeners carry neither (gRPC clients have no downstream to protect).

Certificates: a sidecar reads ``cert.pem``, ``key.pem`` and ``ca.pem`` (the identity agent's
layout, ``meshproxy run --cert-dir``) from ``sidecars.cert_dir`` with ``{group}`` and
``{service}`` replaced. Must not depend on: grpc, asyncio, the YAML loader.
"""

from __future__ import annotations

from envoy.config.core.v3.base_pb2 import TransportSocket
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf.message import Message

from controlplane.mesh.envoy import (
    LOCAL_APP,
    ads,
    cluster_name,
    downstream_tls,
    eds_cluster,
    inbound_route_configuration,
    load_assignment,
    local_app_cluster,
    packed,
    route_configuration,
    socket_address,
    upstream_tls,
)
from controlplane.mesh.model import Mesh, Service, Sidecar, Version
from controlplane.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources

DEFAULT_GROUP = "default"
_HCM_NAME = "envoy.filters.network.http_connection_manager"
_TCP_NAME = "envoy.filters.network.tcp_proxy"
_ROUTER_NAME = "envoy.filters.http.router"
SIDECAR_REQUEST_HEADERS_TIMEOUT = 10  # seconds: Envoy's recommended edge value, Istio's too


def translate(mesh: Mesh) -> dict[str, Resources]:
    """Group name -> resources (type URL -> name -> message); every group has all four types."""
    groups = {DEFAULT_GROUP: _default_group(mesh)}
    for service in mesh.services:
        for sidecar in service.sidecars():
            groups[sidecar.group] = _sidecar_group(mesh, service, sidecar)
    return groups


def cert_dir(mesh: Mesh, service: Service, sidecar: Sidecar) -> str:
    return mesh.sidecars.cert_dir.replace("{group}", sidecar.group).replace("{service}", service.name)


def _empty() -> Resources:
    return {LISTENER: {}, ROUTE: {}, CLUSTER: {}, ENDPOINT: {}}


def _add(resources: Resources, type_url: str, name: str, message: Message) -> None:
    resources[type_url][name] = message


def _sidecar_group(mesh: Mesh, service: Service, sidecar: Sidecar) -> Resources:
    out = _empty()
    certs = cert_dir(mesh, service, sidecar)
    if sidecar.inbound is not None and sidecar.app is not None and service.allow:
        listener = listener_pb2.Listener(name="inbound", address=socket_address(sidecar.inbound))
        chain = listener.filter_chains.add()
        chain.transport_socket.CopyFrom(downstream_tls(mesh, certs, service))
        if service.protocol == "tcp":
            proxy = tcp_proxy_pb2.TcpProxy(stat_prefix="inbound", cluster=LOCAL_APP)
            chain.filters.append(lc.Filter(name=_TCP_NAME, typed_config=packed(proxy)))
        else:
            manager = _sidecar_http_manager("inbound")
            manager.route_config.CopyFrom(inbound_route_configuration())
            chain.filters.append(_hcm_filter(manager))
        _add(out, LISTENER, listener.name, listener)
        _add(out, CLUSTER, LOCAL_APP, local_app_cluster(sidecar.app, service))
    for callee in mesh.services:
        if not callee.admits(service.identity):
            continue
        name = f"outbound|{callee.name}"
        listener = listener_pb2.Listener(
            name=name, address=socket_address((mesh.sidecars.outbound_address, callee.port))
        )
        if callee.protocol == "tcp":
            listener.filter_chains.add().filters.append(_tcp_filter(name, callee))
        else:
            manager = _sidecar_http_manager(name)
            manager.rds.config_source.CopyFrom(ads())
            manager.rds.route_config_name = callee.name
            listener.filter_chains.add().filters.append(_hcm_filter(manager))
            _add(out, ROUTE, callee.name, route_configuration(callee))
        _add(out, LISTENER, name, listener)
        for version in callee.versions:
            tls = upstream_tls(mesh, certs, callee) if callee.meshed(version) else None
            _add_version(out, callee, version, tls)
    return out


def _default_group(mesh: Mesh) -> Resources:
    out = _empty()
    for service in mesh.services:
        if service.protocol == "tcp" or not service.allow:
            continue  # gRPC clients speak HTTP/2 only; nobody may call a service without allow
        for name in (service.name, f"{service.name}:{service.port}"):
            manager = _http_manager(service.name)
            manager.rds.config_source.CopyFrom(ads())
            manager.rds.route_config_name = service.name
            listener = listener_pb2.Listener(name=name)
            listener.api_listener.api_listener.CopyFrom(packed(manager))
            _add(out, LISTENER, name, listener)
        _add(out, ROUTE, service.name, route_configuration(service))
        for version in service.versions:
            _add_version(out, service, version, None)
    return out


def _add_version(out: Resources, service: Service, version: Version, tls: TransportSocket | None) -> None:
    name = cluster_name(service, version)
    _add(out, CLUSTER, name, eds_cluster(service, version, tls))
    _add(out, ENDPOINT, name, load_assignment(name, version.endpoints))


def _http_manager(stat_prefix: str) -> hcm.HttpConnectionManager:
    return hcm.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm.HttpConnectionManager.AUTO,
        http_filters=[
            hcm.HttpFilter(name="envoy.filters.http.router", typed_config=packed(router_pb2.Router()))
        ],
        # As Istio: WebSocket upgrades pass (meshproxy refuses an upgrade not listed, with 403).
        upgrade_configs=[hcm.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
    )


def _sidecar_http_manager(stat_prefix: str) -> hcm.HttpConnectionManager:
    manager = _http_manager(stat_prefix)
    manager.normalize_path.value = True
    manager.request_headers_timeout.FromSeconds(SIDECAR_REQUEST_HEADERS_TIMEOUT)
    return manager


def _hcm_filter(manager: hcm.HttpConnectionManager) -> lc.Filter:
    return lc.Filter(name=_HCM_NAME, typed_config=packed(manager))


def _tcp_filter(stat_prefix: str, service: Service) -> lc.Filter:
    """A TCP service follows its first route's split (TCP has no requests to match)."""
    versions = {v.name: v for v in service.versions}
    split = service.routes[0].split
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
    if len(split) == 1:
        proxy.cluster = cluster_name(service, versions[split[0][0]])
    for version, weight in split if len(split) > 1 else ():
        proxy.weighted_clusters.clusters.add(name=cluster_name(service, versions[version]), weight=weight)
    return lc.Filter(name=_TCP_NAME, typed_config=packed(proxy))
