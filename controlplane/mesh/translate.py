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
``{service}`` replaced.

Every resource comes from a `ResourceMemo` keyed by what it is built from (see memo.py): a
resource several groups hold (a callee's route, cluster and endpoints, a ``virtualOutbound``
whose targets are the same) is one shared message, and a publish after an EndpointSlice change
builds only the ClusterLoadAssignments whose endpoints changed. Must not depend on: grpc,
asyncio, the YAML loader.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import replace

from envoy.config.core.v3 import base_pb2
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
from controlplane.mesh.memo import ResourceMemo
from controlplane.mesh.model import (
    Address,
    Mesh,
    MtlsMode,
    OutboundPolicy,
    Service,
    ServicePort,
    Sidecar,
    Version,
)
from controlplane.mesh.telemetry import with_istio_stats
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


def translate(mesh: Mesh, memo: ResourceMemo | None = None) -> dict[str, Resources]:
    """Group name -> resources (type URL -> name -> message); every group has all four types.
    ``memo``, kept from one call to the next, reuses the resources whose inputs are unchanged."""
    memo = memo or ResourceMemo()
    memo.begin()
    build = _Builder(mesh, memo)
    groups = {DEFAULT_GROUP: build.default_group()}
    for service in mesh.services:
        for sidecar in service.sidecars():
            groups[sidecar.group] = build.sidecar_group(service, sidecar)
    return groups


def cert_dir(mesh: Mesh, service: Service, sidecar: Sidecar) -> str:
    return mesh.sidecars.cert_dir.replace("{group}", sidecar.group).replace("{service}", service.name)


def _empty() -> Resources:
    return {LISTENER: {}, ROUTE: {}, CLUSTER: {}, ENDPOINT: {}}


def _add(resources: Resources, type_url: str, name: str, message: Message) -> None:
    resources[type_url][name] = message


class _Builder:
    """One translation: the mesh, and the memo every resource is taken from."""

    def __init__(self, mesh: Mesh, memo: ResourceMemo) -> None:
        self.mesh = mesh
        self.memo = memo
        self.stats = mesh.sidecars.istio_metrics

    def _sidecar_listener(self, listener: listener_pb2.Listener) -> listener_pb2.Listener:
        return with_istio_stats(listener) if self.stats else listener

    def sidecar_group(self, service: Service, sidecar: Sidecar) -> Resources:
        if sidecar.mode == "transparent":
            return self.transparent_group(service, sidecar)
        mesh, memo = self.mesh, self.memo
        out = _empty()
        certs = cert_dir(mesh, service, sidecar)
        if sidecar.inbound is not None and sidecar.app is not None and service.allow:
            inbound, app = sidecar.inbound, sidecar.app
            key: tuple[Hashable, ...] = (
                "inbound",
                self.stats,
                inbound,
                mesh.pq,
                mesh.trust_domain,
                mesh.hybrid_callers,
                certs,
                service.allow,
                service.protocol,
            )
            listener = memo.get(key, (), self._inbound, inbound, certs, service)
            _add(out, LISTENER, listener.name, listener)
            timeout = service.policy.connect_timeout
            local = memo.get(("local", app, LOCAL_APP, "http", timeout), (), local_app_cluster, app, service)
            _add(out, CLUSTER, LOCAL_APP, local)
        for callee in mesh.services:
            if not callee.admits(service.identity):
                continue
            name = f"outbound|{callee.name}"
            key = ("outbound", self.stats, name, mesh.sidecars.outbound_address, _chain_inputs(callee, None))
            listener = memo.get(key, (), self._outbound, name, callee)
            _add(out, LISTENER, name, listener)
            self._callee(out, callee, None, certs)
        return out

    def _inbound(self, inbound: Address, certs: str, service: Service) -> listener_pb2.Listener:
        listener = listener_pb2.Listener(
            name="inbound", address=socket_address(inbound), traffic_direction=base_pb2.INBOUND
        )
        chain = listener.filter_chains.add()
        chain.transport_socket.CopyFrom(downstream_tls(self.mesh, certs))
        allowed = callers(self.mesh, service, "inbound")
        if service.protocol == "tcp":
            chain.filters.extend([allowed.network, tcp_proxy_filter("inbound", LOCAL_APP)])
        else:
            manager = sidecar_http_manager("inbound")
            manager.http_filters.insert(0, allowed.http)
            manager.route_config.CopyFrom(inbound_route_configuration())
            chain.filters.append(hcm_filter(manager))
        return self._sidecar_listener(listener)

    def _outbound(self, name: str, callee: Service) -> listener_pb2.Listener:
        listener = listener_pb2.Listener(
            name=name,
            address=socket_address((self.mesh.sidecars.outbound_address, callee.port)),
            traffic_direction=base_pb2.OUTBOUND,
        )
        if callee.protocol == "tcp":
            listener.filter_chains.add().filters.append(tcp_filter(name, callee))
        else:
            manager = sidecar_http_manager(name)
            manager.rds.config_source.CopyFrom(ads())
            manager.rds.route_config_name = callee.name
            listener.filter_chains.add().filters.append(hcm_filter(manager))
        return self._sidecar_listener(listener)

    def _virtual_outbound(
        self, address: Address, targets: list[tuple[Service, ServicePort]], policy: OutboundPolicy
    ) -> listener_pb2.Listener:
        return self._sidecar_listener(virtual_outbound(address, targets, policy))

    def _virtual_inbound(
        self, address: Address, ports: tuple[ServicePort, ...], certs: str, service: Service, mtls: MtlsMode
    ) -> listener_pb2.Listener:
        tls = downstream_tls(self.mesh, certs)
        allowed = callers(self.mesh, service, VIRTUAL_INBOUND)
        return self._sidecar_listener(virtual_inbound(address, ports, tls, allowed, mtls))

    def _cluster(
        self, service: Service, version: Version, certs: str | None, port: ServicePort | None
    ) -> Message:
        tls = upstream_tls(self.mesh, certs, service) if certs is not None else None
        return eds_cluster(service, version, tls, port)

    def default_group(self) -> Resources:
        out = _empty()
        for service in self.mesh.services:
            if service.protocol == "tcp" or not service.allow:
                continue  # gRPC clients speak HTTP/2 only; nobody may call a service without allow
            for name in (service.name, f"{service.name}:{service.port}"):
                listener = self.memo.get(("api", name, service.name), (), _api_listener, name, service.name)
                _add(out, LISTENER, name, listener)
            self._callee(out, service, None, None)
        return out

    def transparent_group(self, service: Service, sidecar: Sidecar) -> Resources:
        """``virtualOutbound`` with a chain per VIP port of every service that admits this one,
        those ports' routes and clusters (PQ mTLS to meshed versions, as in explicit mode) and the
        fallback cluster; ``virtualInbound`` for the application's ports when anyone may call."""
        mesh, memo = self.mesh, self.memo
        out = _empty()
        certs = cert_dir(mesh, service, sidecar)
        targets = [
            (callee, port)
            for callee in mesh.services
            if callee.vips and callee.admits(service.identity)
            for port in callee.ports
        ]
        for callee, port in targets:
            self._callee(out, callee, port, certs)
        policy = sidecar.outbound_traffic_policy or mesh.outbound_traffic_policy
        address = mesh.sidecars.virtual_outbound
        chains = tuple(_chain_inputs(callee, port) for callee, port in targets)
        key: tuple[Hashable, ...] = (VIRTUAL_OUTBOUND, self.stats, address, policy, chains)
        outbound = memo.get(key, (), self._virtual_outbound, address, targets, policy)
        _add(out, LISTENER, VIRTUAL_OUTBOUND, outbound)
        _add(out, CLUSTER, FALLBACK[policy], memo.get(("fallback", policy), (), fallback_cluster, policy))
        if service.allow:
            ports = _application_ports(service, sidecar)
            inbound_address, mtls = mesh.sidecars.virtual_inbound, sidecar.mtls
            key = (
                *(VIRTUAL_INBOUND, self.stats, inbound_address, ports, mesh.pq, mesh.trust_domain),
                *(mesh.hybrid_callers, certs, service.allow, mtls),
            )
            inbound = memo.get(key, (), self._virtual_inbound, inbound_address, ports, certs, service, mtls)
            _add(out, LISTENER, VIRTUAL_INBOUND, inbound)
            timeout = service.policy.connect_timeout
            for port in ports:
                name = inbound_cluster_name(port.port)
                app = ("127.0.0.1", port.port)
                key = ("local", app, name, port.protocol, timeout)
                cluster = memo.get(key, (), local_app_cluster, app, service, name, port.protocol)
                _add(out, CLUSTER, name, cluster)
        return out

    def _callee(self, out: Resources, service: Service, port: ServicePort | None, certs: str | None) -> None:
        """What calling ``service`` (at ``port``) takes: its route, its versions' clusters and
        endpoints, looked up as one entry while the service is the same object (or equal)."""
        number = port.port if port else None
        key = ("callee", service.name, number, certs)
        for type_url, name, message in self.memo.get(
            key, (service, port, self.mesh.pq), self._bundle, service, port, certs
        ):
            out[type_url][name] = message

    def _bundle(
        self, service: Service, port: ServicePort | None, certs: str | None
    ) -> tuple[tuple[str, str, Message], ...]:
        out = _empty()
        if (port.protocol if port else service.protocol) != "tcp":
            self._route(out, service, port)
        for version in service.versions:
            self._version(out, service, version, certs, port)
        return tuple(
            (type_url, name, message)
            for type_url, by_name in out.items()
            for name, message in by_name.items()
        )

    def _route(self, out: Resources, service: Service, port: ServicePort | None) -> None:
        number = port.port if port else None
        name = route_name(service, number)
        versions = tuple(v.name for v in service.versions)
        key = ("route", name, service.name, service.port, number)
        route = self.memo.get(key, (service.routes, versions), route_configuration, service, number)
        _add(out, ROUTE, name, route)

    def _version(
        self,
        out: Resources,
        service: Service,
        version: Version,
        certs: str | None,
        port: ServicePort | None = None,
    ) -> None:
        """The version's cluster and endpoints (``certs``: the caller's, None for proxyless
        clients); for a VIP ``port`` other than the service's first, the endpoints' IPs at that
        port."""
        mesh, memo = self.mesh, self.memo
        number = port.port if port else None
        name = cluster_name(service, version, number)
        protocol = port.protocol if port else service.protocol
        meshed = certs is not None and service.meshed(version)
        tls_key = (mesh.pq, certs, service.identity) if meshed else None
        key = ("cluster", name, protocol, tls_key)
        tls_certs = certs if meshed else None
        cluster = memo.get(key, (service.policy,), self._cluster, service, version, tls_certs, port)
        _add(out, CLUSTER, name, cluster)
        at = number if number is not None and number != service.port else None
        cla = memo.get(("cla", name, at), (version.endpoints,), _load_assignment, name, version, at)
        _add(out, ENDPOINT, name, cla)


def _api_listener(name: str, service: str) -> listener_pb2.Listener:
    manager = http_manager(service)
    manager.rds.config_source.CopyFrom(ads())
    manager.rds.route_config_name = service
    listener = listener_pb2.Listener(name=name)
    listener.api_listener.api_listener.CopyFrom(packed(manager))
    return listener


def _chain_inputs(callee: Service, port: ServicePort | None) -> tuple[object, ...]:
    """What an outbound listener or ``virtualOutbound`` chain reads from a callee (and port):
    names, VIPs, ports, protocols, and for TCP the first route's split."""
    protocol = port.protocol if port else callee.protocol
    split = callee.routes[0].split if protocol in ("tcp", None) else ()
    versions = tuple(v.name for v in callee.versions) if split else ()
    number = port.port if port else None
    return (callee.name, callee.vips, callee.port, number, protocol, split, versions)


def _load_assignment(name: str, version: Version, port: int | None) -> Message:
    endpoints = version.endpoints
    if port is not None:
        endpoints = tuple(replace(e, address=(e.address[0], port)) for e in endpoints)
    return load_assignment(name, endpoints)


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
