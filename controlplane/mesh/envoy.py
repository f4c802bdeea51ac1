"""Envoy resource builders for the mesh translator: clusters, endpoints, routes, TLS contexts.

Owns how one concept of the mesh model is spelled in Envoy's v3 API (the standard fields only,
so any xDS client understands them): a version's EDS cluster with its policy and, when the
callee has a sidecar, an ``UpstreamTlsContext`` with the mesh's PQ groups and the callee's SPIFFE
ID; its ``ClusterLoadAssignment``; a service's ``RouteConfiguration`` with weighted splits,
retries and timeouts; the ``DownstreamTlsContext`` that authenticates the trust domain's
identities (``authz.py`` authorizes the allowed callers among them). Which
resources go to which group is ``translate.py``'s business.

Must not depend on: grpc, asyncio, the YAML loader.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

from controlplane.mesh.model import (
    Address,
    Allow,
    Endpoint,
    Mesh,
    Protocol,
    Route,
    Service,
    ServicePort,
    Version,
)
from meshproxy.tls.policy import named

_LB = {
    "round_robin": cluster_pb2.Cluster.ROUND_ROBIN,
    "least_request": cluster_pb2.Cluster.LEAST_REQUEST,
    "random": cluster_pb2.Cluster.RANDOM,
    "ring_hash": cluster_pb2.Cluster.RING_HASH,
    "maglev": cluster_pb2.Cluster.MAGLEV,
}
_TLS = "envoy.transport_sockets.tls"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
LOCAL_APP = "local_app"  # not a valid service name, so it cannot collide with one
HCM_NAME = "envoy.filters.network.http_connection_manager"
TCP_NAME = "envoy.filters.network.tcp_proxy"
SIDECAR_REQUEST_HEADERS_TIMEOUT = 10  # seconds: Envoy's recommended edge value, Istio's too


def cluster_name(service: Service, version: Version, port: int | None = None) -> str:
    """``greeter`` for an unversioned service, ``greeter|v1`` for a version ('|' is not in names);
    for a VIP port other than the service's first, Istio's ``outbound|PORT|SUBSET|SERVICE``."""
    if port is not None and port != service.port:
        return f"outbound|{port}|{version.name}|{service.name}"
    return f"{service.name}|{version.name}" if version.name else service.name


def route_name(service: Service, port: int | None = None) -> str:
    """The service's RouteConfiguration: ``greeter``, or ``greeter:PORT`` for a further VIP port."""
    return f"{service.name}:{port}" if port is not None and port != service.port else service.name


def packed(message: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def seconds(value: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(value * 1e9))
    return out


def socket_address(address: Address) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address[0], port_value=address[1])
    )


def ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


# ----------------------------------------------------------------------------- TLS


def _common_tls(mesh: Mesh, cert_dir: str, sans: Sequence[Allow]) -> tls_pb2.CommonTlsContext:
    params = common_pb2.TlsParameters(
        tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
        ecdh_curves=list(named(mesh.pq, "mesh.pq").groups),
    )
    matchers = [
        common_pb2.SubjectAltNameMatcher(
            san_type=common_pb2.SubjectAltNameMatcher.URI,
            matcher=string_pb2.StringMatcher(**{"prefix" if a.prefix else "exact": a.identity}),
        )
        for a in sans
    ]
    return tls_pb2.CommonTlsContext(
        tls_params=params,
        tls_certificates=[
            common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(filename=f"{cert_dir}/cert.pem"),
                private_key=base_pb2.DataSource(filename=f"{cert_dir}/key.pem"),
            )
        ],
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(filename=f"{cert_dir}/ca.pem"),
            match_typed_subject_alt_names=matchers,
        ),
    )


def upstream_tls(mesh: Mesh, cert_dir: str, callee: Service) -> base_pb2.TransportSocket:
    """Mutual TLS 1.3 with the mesh's PQ groups to a sidecar that must prove ``callee``'s ID."""
    context = tls_pb2.UpstreamTlsContext(
        common_tls_context=_common_tls(mesh, cert_dir, [Allow(callee.identity)])
    )
    return base_pb2.TransportSocket(name=_TLS, typed_config=packed(context))


def downstream_tls(mesh: Mesh, cert_dir: str) -> base_pb2.TransportSocket:
    """Mutual TLS 1.3 that authenticates any identity of the trust domain; which of them may
    call is authorization, the RBAC filter of ``authz.py`` after it."""
    context = tls_pb2.DownstreamTlsContext(
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
        common_tls_context=_common_tls(mesh, cert_dir, [Allow(f"spiffe://{mesh.trust_domain}/", True)]),
    )
    return base_pb2.TransportSocket(name=_TLS, typed_config=packed(context))


# ----------------------------------------------------------------------------- clusters


def eds_cluster(
    service: Service,
    version: Version,
    tls: base_pb2.TransportSocket | None,
    port: ServicePort | None = None,
) -> cluster_pb2.Cluster:
    """The EDS cluster of one version (its endpoints come as a ClusterLoadAssignment over ADS);
    with a VIP ``port``, the one that port's traffic takes, speaking that port's protocol."""
    policy = service.policy
    cluster = cluster_pb2.Cluster(
        name=cluster_name(service, version, port.port if port else None),
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads()),
        connect_timeout=seconds(policy.connect_timeout),
        lb_policy=_LB[policy.lb],
    )
    if tls is not None:
        cluster.transport_socket.CopyFrom(tls)
    _protocol_options(cluster, port.protocol if port else service.protocol)
    if policy.circuit_breakers is not None:
        threshold = circuit_breaker_pb2.CircuitBreakers.Thresholds()
        for key, value in _fields(policy.circuit_breakers).items():
            getattr(threshold, key).value = value
        cluster.circuit_breakers.thresholds.append(threshold)
    if (outlier := policy.outlier_detection) is not None:
        detection = outlier_detection_pb2.OutlierDetection()
        for key, value in _fields(outlier).items():
            if key in ("interval", "base_ejection_time"):
                getattr(detection, key).CopyFrom(seconds(value))
            else:
                getattr(detection, key).value = value
        cluster.outlier_detection.CopyFrom(detection)
    return cluster


def _fields(obj: object) -> dict[str, Any]:  # int and float fields of a frozen config object
    return {k: getattr(obj, k) for k in obj.__slots__ if getattr(obj, k) is not None}  # type: ignore[attr-defined]  # slotted dataclasses


def load_assignment(name: str, endpoints: Sequence[Endpoint]) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints grouped by locality; each locality weighs the sum of its endpoints' weights
    (gRPC's xDS client drops a locality that has no weight)."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    by_locality: dict[tuple[str, str, str], list[Endpoint]] = {}
    for endpoint in endpoints:
        loc = endpoint.locality
        by_locality.setdefault((loc.region, loc.zone, loc.sub_zone), []).append(endpoint)
    for (region, zone, sub_zone), members in by_locality.items():
        group = cla.endpoints.add()
        group.locality.region, group.locality.zone, group.locality.sub_zone = region, zone, sub_zone
        group.load_balancing_weight.value = sum(e.weight for e in members)
        for endpoint in members:
            group.lb_endpoints.append(
                endpoint_components_pb2.LbEndpoint(
                    endpoint=endpoint_components_pb2.Endpoint(address=socket_address(endpoint.address)),
                    load_balancing_weight=wrappers_pb2.UInt32Value(value=endpoint.weight),
                )
            )
    return cla


def _protocol_options(cluster: cluster_pb2.Cluster, protocol: Protocol | None) -> None:
    """gRPC goes upstream as HTTP/2; a detected protocol as the downstream spoke it."""
    if protocol not in ("grpc", None):
        return
    options = hpo.HttpProtocolOptions()
    if protocol == "grpc":
        options.explicit_http_config.http2_protocol_options.SetInParent()
    else:
        options.use_downstream_protocol_config.SetInParent()
    cluster.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(packed(options))


def local_app_cluster(
    app: Address, service: Service, name: str = LOCAL_APP, protocol: Protocol | None = "http"
) -> cluster_pb2.Cluster:
    """The sidecar's own application: STATIC for an IP, STRICT_DNS for a name. A transparent
    sidecar has one per application port, ``inbound|PORT||``, speaking that port's protocol
    (``None``: detected, relayed by tcp_proxy, so no HTTP options)."""
    try:
        ipaddress.ip_address(app[0])
        kind = cluster_pb2.Cluster.STATIC
    except ValueError:
        kind = cluster_pb2.Cluster.STRICT_DNS
    cluster = cluster_pb2.Cluster(
        name=name, type=kind, connect_timeout=seconds(service.policy.connect_timeout)
    )
    cluster.load_assignment.cluster_name = name
    cluster.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.CopyFrom(socket_address(app))
    if protocol == "grpc":
        _protocol_options(cluster, protocol)
    return cluster


# ----------------------------------------------------------------------------- routes


def route_configuration(service: Service, port: int | None = None) -> route_pb2.RouteConfiguration:
    """The service's routes under one virtual host matching any authority: each sidecar listener
    (or VIP filter chain) and each proxyless api_listener that names this configuration is
    dedicated to the service; a further VIP ``port`` routes to that port's clusters."""
    vhost = rc.VirtualHost(name=service.name, domains=["*"])
    for route in service.routes:
        vhost.routes.append(_route(service, route, port))
    return route_pb2.RouteConfiguration(name=route_name(service, port), virtual_hosts=[vhost])


def _route(service: Service, route: Route, port: int | None) -> rc.Route:
    match = rc.RouteMatch()
    if route.match.path is not None:
        match.path = route.match.path
    else:
        match.prefix = route.match.prefix or "/"
    for name, value in route.match.headers:
        match.headers.add(name=name, string_match=string_pb2.StringMatcher(exact=value))
    action = rc.RouteAction()
    versions = {v.name: v for v in service.versions}
    if len(route.split) == 1:
        action.cluster = cluster_name(service, versions[route.split[0][0]], port)
    else:
        for version, weight in route.split:
            action.weighted_clusters.clusters.add(
                name=cluster_name(service, versions[version], port),
                weight=wrappers_pb2.UInt32Value(value=weight),
            )
    if route.timeout is not None:
        action.timeout.CopyFrom(seconds(route.timeout))
    if route.retries is not None:
        retries = route.retries
        action.retry_policy.retry_on = ",".join(retries.on)
        action.retry_policy.num_retries.value = retries.attempts
        if retries.per_try_timeout is not None:
            action.retry_policy.per_try_timeout.CopyFrom(seconds(retries.per_try_timeout))
    return rc.Route(match=match, route=action)


def inbound_route_configuration(
    cluster: str = LOCAL_APP, name: str = "inbound"
) -> route_pb2.RouteConfiguration:
    """Everything an authorised caller sends goes to the local application."""
    vhost = rc.VirtualHost(name=cluster, domains=["*"])
    vhost.routes.add(match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(cluster=cluster))
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[vhost])


# ----------------------------------------------------------------------------- network filters


def http_manager(stat_prefix: str) -> hcm.HttpConnectionManager:
    return hcm.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm.HttpConnectionManager.AUTO,
        http_filters=[
            hcm.HttpFilter(name="envoy.filters.http.router", typed_config=packed(router_pb2.Router()))
        ],
        # As Istio: WebSocket upgrades pass (meshproxy refuses an upgrade not listed, with 403).
        upgrade_configs=[hcm.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
    )


def sidecar_http_manager(stat_prefix: str) -> hcm.HttpConnectionManager:
    manager = http_manager(stat_prefix)
    manager.normalize_path.value = True
    manager.request_headers_timeout.FromSeconds(SIDECAR_REQUEST_HEADERS_TIMEOUT)
    return manager


def hcm_filter(manager: hcm.HttpConnectionManager) -> lc.Filter:
    return lc.Filter(name=HCM_NAME, typed_config=packed(manager))


def tcp_filter(stat_prefix: str, service: Service, port: int | None = None) -> lc.Filter:
    """A TCP service follows its first route's split (TCP has no requests to match); a further
    VIP ``port`` to that port's clusters."""
    versions = {v.name: v for v in service.versions}
    split = service.routes[0].split
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
    if len(split) == 1:
        proxy.cluster = cluster_name(service, versions[split[0][0]], port)
    for version, weight in split if len(split) > 1 else ():
        proxy.weighted_clusters.clusters.add(
            name=cluster_name(service, versions[version], port), weight=weight
        )
    return lc.Filter(name=TCP_NAME, typed_config=packed(proxy))


def tcp_proxy_filter(stat_prefix: str, cluster: str) -> lc.Filter:
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, cluster=cluster)
    return lc.Filter(name=TCP_NAME, typed_config=packed(proxy))
