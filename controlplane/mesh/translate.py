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

from dataclasses import replace

from envoy.config.core.v3 import base_pb2
from envoy.config.core.v3.base_pb2 import TransportSocket
from envoy.config.listener.v3 import listener_pb2
from google.protobuf.message import Message

from controlplane.mesh.authz import callers
from controlplane.mesh.envoy import (
    LOCAL_APP,
    ads,
    cluster_name,
    downstream_tls,
    eds_cluster,
    hcm_filter,
    http_manager,
    inbound_route_configuration,
    load_assignment,
    local_app_cluster,
    packed,
    route_configuration,
    route_name,
    sidecar_http_manager,
    socket_address,
    tcp_filter,
    tcp_proxy_filter,
    upstream_tls,
)
from controlplane.mesh.model import Mesh, Service, ServicePort, Sidecar, Version
from controlplane.mesh.telemetry import add_istio_stats
from controlplane.mesh.virtual import (
    FALLBACK,
    VIRTUAL_INBOUND,
    VIRTUAL_OUTBOUND,
    fallback_cluster,
    inbound_cluster_name,
    virtual_inbound,
    virtual_outbound,
)
from controlplane.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources

DEFAULT_GROUP = "default"


def translate(mesh: Mesh) -> dict[str, Resources]:
    """Group name -> resources (type URL -> name -> message); every group has all four types."""
    groups = {DEFAULT_GROUP: _default_group(mesh)}
    for service in mesh.services:
        for sidecar in service.sidecars():
            resources = groups[sidecar.group] = _sidecar_group(mesh, service, sidecar)
            if mesh.sidecars.istio_metrics:
                add_istio_stats(resources)
    return groups


def cert_dir(mesh: Mesh, service: Service, sidecar: Sidecar) -> str:
    return mesh.sidecars.cert_dir.replace("{group}", sidecar.group).replace("{service}", service.name)


def _empty() -> Resources:
    return {LISTENER: {}, ROUTE: {}, CLUSTER: {}, ENDPOINT: {}}


def _add(resources: Resources, type_url: str, name: str, message: Message) -> None:
    resources[type_url][name] = message


def _sidecar_group(mesh: Mesh, service: Service, sidecar: Sidecar) -> Resources:
    if sidecar.mode == "transparent":
        return _transparent_group(mesh, service, sidecar)
    out = _empty()
    certs = cert_dir(mesh, service, sidecar)
    if sidecar.inbound is not None and sidecar.app is not None and service.allow:
        listener = listener_pb2.Listener(
            name="inbound", address=socket_address(sidecar.inbound), traffic_direction=base_pb2.INBOUND
        )
        chain = listener.filter_chains.add()
        chain.transport_socket.CopyFrom(downstream_tls(mesh, certs))
        allowed = callers(mesh, service, "inbound")
        if service.protocol == "tcp":
            chain.filters.extend([allowed.network, tcp_proxy_filter("inbound", LOCAL_APP)])
        else:
            manager = sidecar_http_manager("inbound")
            manager.http_filters.insert(0, allowed.http)
            manager.route_config.CopyFrom(inbound_route_configuration())
            chain.filters.append(hcm_filter(manager))
        _add(out, LISTENER, listener.name, listener)
        _add(out, CLUSTER, LOCAL_APP, local_app_cluster(sidecar.app, service))
    for callee in mesh.services:
        if not callee.admits(service.identity):
            continue
        name = f"outbound|{callee.name}"
        listener = listener_pb2.Listener(
            name=name,
            address=socket_address((mesh.sidecars.outbound_address, callee.port)),
            traffic_direction=base_pb2.OUTBOUND,
        )
        if callee.protocol == "tcp":
            listener.filter_chains.add().filters.append(tcp_filter(name, callee))
        else:
            manager = sidecar_http_manager(name)
            manager.rds.config_source.CopyFrom(ads())
            manager.rds.route_config_name = callee.name
            listener.filter_chains.add().filters.append(hcm_filter(manager))
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
            manager = http_manager(service.name)
            manager.rds.config_source.CopyFrom(ads())
            manager.rds.route_config_name = service.name
            listener = listener_pb2.Listener(name=name)
            listener.api_listener.api_listener.CopyFrom(packed(manager))
            _add(out, LISTENER, name, listener)
        _add(out, ROUTE, service.name, route_configuration(service))
        for version in service.versions:
            _add_version(out, service, version, None)
    return out


def _transparent_group(mesh: Mesh, service: Service, sidecar: Sidecar) -> Resources:
    """``virtualOutbound`` with a chain per VIP port of every service that admits this one,
    those ports' routes and clusters (PQ mTLS to meshed versions, as in explicit mode) and the
    fallback cluster; ``virtualInbound`` for the application's ports when anyone may call."""
    out = _empty()
    certs = cert_dir(mesh, service, sidecar)
    targets = [
        (callee, port)
        for callee in mesh.services
        if callee.vips and callee.admits(service.identity)
        for port in callee.ports
    ]
    for callee, port in targets:
        if port.protocol != "tcp":
            _add(out, ROUTE, route_name(callee, port.port), route_configuration(callee, port.port))
        for version in callee.versions:
            tls = upstream_tls(mesh, certs, callee) if callee.meshed(version) else None
            _add_version(out, callee, version, tls, port)
    policy = sidecar.outbound_traffic_policy or mesh.outbound_traffic_policy
    _add(out, LISTENER, VIRTUAL_OUTBOUND, virtual_outbound(mesh.sidecars.virtual_outbound, targets, policy))
    _add(out, CLUSTER, FALLBACK[policy], fallback_cluster(policy))
    if service.allow:
        ports = _application_ports(service, sidecar)
        tls = downstream_tls(mesh, certs)
        allowed = callers(mesh, service, VIRTUAL_INBOUND)
        _add(
            out,
            LISTENER,
            VIRTUAL_INBOUND,
            virtual_inbound(mesh.sidecars.virtual_inbound, ports, tls, allowed, sidecar.mtls),
        )
        for port in ports:
            name = inbound_cluster_name(port.port)
            _add(
                out, CLUSTER, name, local_app_cluster(("127.0.0.1", port.port), service, name, port.protocol)
            )
    return out


def _application_ports(service: Service, sidecar: Sidecar) -> tuple[ServicePort, ...]:
    """The ports callers address on this sidecar's instances: its endpoints' ports (the
    service's first port, as a Service's ``targetPort``), else that port itself; then the
    service's further ports, which callers reach at the endpoint's IP."""
    versions = (
        service.versions
        if service.sidecar is sidecar
        else [v for v in service.versions if v.sidecar is sidecar]
    )
    first = service.ports[0]
    targets = sorted({e.address[1] for v in versions for e in v.endpoints}) or [first.port]
    ports = [ServicePort(p, first.protocol) for p in targets]
    return (*ports, *(p for p in service.ports[1:] if p.port not in targets))


def _add_version(
    out: Resources,
    service: Service,
    version: Version,
    tls: TransportSocket | None,
    port: ServicePort | None = None,
) -> None:
    """The version's cluster and endpoints; for a VIP ``port`` other than the service's first,
    the endpoints' IPs at that port."""
    name = cluster_name(service, version, port.port if port else None)
    endpoints = version.endpoints
    if port is not None and port.port != service.port:
        endpoints = tuple(replace(e, address=(e.address[0], port.port)) for e in endpoints)
    _add(out, CLUSTER, name, eds_cluster(service, version, tls, port))
    _add(out, ENDPOINT, name, load_assignment(name, endpoints))
