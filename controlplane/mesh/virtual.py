"""Istio's transparent-sidecar listeners, spelled in Envoy's v3 API: ``virtualOutbound`` and
``virtualInbound``, and the clusters only they use.

Owns the shape of the capture listeners (Istio's names and ports, 15001 and 15006):

- ``virtualOutbound`` takes every connection the application opens (``meshproxy iptables``
  redirects them), recovers the original destination (``envoy.filters.listener.original_dst``,
  ``use_original_dst: true``) and picks a filter chain by it: one per service and port
  (``prefix_ranges`` VIP/32 or /128, both VIPs of a dual-stack service, ``destination_port``).
  An ``http``/``grpc`` port runs the
  sidecar HCM with the service's routes (RDS over ADS); a ``tcp`` port runs tcp_proxy; a port
  without a protocol is detected as Istio does: ``http_inspector`` sets ``http/1.1`` or ``h2c``
  and a plaintext chain with those ``application_protocols`` takes HTTP, a second chain takes the
  rest over tcp_proxy (``tls_inspector`` marks the application's own TLS, whose ALPN may also say
  ``http/1.1``, as ``tls``, so it stays opaque). Anything else takes the
  ``default_filter_chain``: tcp_proxy to ``PassthroughCluster`` (ORIGINAL_DST, to where the
  application was going) under ``ALLOW_ANY``, or to ``BlackHoleCluster`` (STATIC, no endpoints:
  the connection is closed) under ``REGISTRY_ONLY``.
- ``virtualInbound`` takes every connection to the pod, matches ``destination_port`` (the
  application port the caller addressed) and ``transport_protocol: tls``, terminates PQ mutual
  TLS (the inbound ``DownstreamTlsContext``: client certificate required, SPIFFE SANs from
  ``allow``), and forwards to ``inbound|PORT||``, a STATIC cluster to ``127.0.0.1:PORT`` (Istio
  before 1.10; its later ORIGINAL_DST with source 127.0.0.6 needs the application to listen on
  the pod IP, which a loopback listener does not). ``PERMISSIVE`` adds the same chain without TLS
  for ``transport_protocol: raw_buffer``; under ``STRICT`` plaintext matches no chain: the proxy
  closes it and counts ``meshproxy_listener_no_filter_chain_match_total{listener="virtualInbound"}``.

Both listeners bind ``::`` by default with ``ipv4_compat`` (one dual-stack socket, Envoy's
field; Istio's dual-stack mode uses ``additional_addresses`` for a second socket instead, which
meshproxy refuses): ``meshproxy iptables`` redirects IPv6 to the same ports, and a VIP of either
family matches its chain (an IPv4 original destination is read as IPv4 on the IPv6 socket).

Which services a group reaches, and which clusters back a chain, is ``translate.py``'s business.
Must not depend on: grpc, asyncio, the YAML loader.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.core.v3.address_pb2 import CidrRange
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message

from controlplane.mesh.authz import Callers
from controlplane.mesh.envoy import (
    ads,
    hcm_filter,
    inbound_route_configuration,
    packed,
    route_name,
    seconds,
    sidecar_http_manager,
    socket_address,
    tcp_filter,
    tcp_proxy_filter,
)
from controlplane.mesh.model import Address, MtlsMode, OutboundPolicy, Service, ServicePort

VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
PASSTHROUGH = "PassthroughCluster"
BLACKHOLE = "BlackHoleCluster"
FALLBACK: dict[OutboundPolicy, str] = {"ALLOW_ANY": PASSTHROUGH, "REGISTRY_ONLY": BLACKHOLE}
DETECTED_HTTP = ("http/1.1", "h2c")  # what http_inspector reports (Istio's outbound match)
_CONNECT_TIMEOUT = 10.0  # Istio's for PassthroughCluster


def inbound_cluster_name(port: int) -> str:
    return f"inbound|{port}||"


def _listener_filter(name: str, config: Message) -> lc.ListenerFilter:
    return lc.ListenerFilter(name=f"envoy.filters.listener.{name}", typed_config=packed(config))


def capture_address(address: Address) -> address_pb2.Address:
    """Where a capture listener binds: ``::`` takes IPv4 too (Envoy's ``ipv4_compat``: one
    dual-stack socket, IPv4 clients arriving as ``::ffff:a.b.c.d``), since ``meshproxy
    iptables`` redirects both families to the same port."""
    bound = socket_address(address)
    bound.socket_address.ipv4_compat = address[0] == "::"
    return bound


def virtual_outbound(
    address: Address, targets: Sequence[tuple[Service, ServicePort]], policy: OutboundPolicy
) -> listener_pb2.Listener:
    """The capture listener for the application's outbound connections; ``targets`` are the
    (service with a VIP, port) pairs this sidecar may call."""
    listener = listener_pb2.Listener(
        name=VIRTUAL_OUTBOUND,
        address=capture_address(address),
        use_original_dst=wrappers_pb2.BoolValue(value=True),
        traffic_direction=base_pb2.OUTBOUND,
        listener_filters=[_listener_filter("original_dst", original_dst_pb2.OriginalDst())],
    )
    for service, port in targets:
        vips = [ipaddress.ip_address(vip) for vip in service.vips]  # only services with a VIP
        match = lc.FilterChainMatch(
            prefix_ranges=[
                CidrRange(
                    address_prefix=str(vip), prefix_len=wrappers_pb2.UInt32Value(value=vip.max_prefixlen)
                )
                for vip in vips
            ]
        )
        match.destination_port.value = port.port
        stat_prefix = f"outbound|{port.port}||{service.name}"
        if port.protocol != "tcp":
            manager = sidecar_http_manager(stat_prefix)
            manager.rds.config_source.CopyFrom(ads())
            manager.rds.route_config_name = route_name(service, port.port)
            http = listener.filter_chains.add(name=stat_prefix, filter_chain_match=match)
            http.filters.append(hcm_filter(manager))
            if port.protocol is None:
                http.filter_chain_match.transport_protocol = "raw_buffer"
                http.filter_chain_match.application_protocols.extend(DETECTED_HTTP)
        if port.protocol in ("tcp", None):
            name = f"{stat_prefix}|tcp" if port.protocol is None else stat_prefix
            opaque = listener.filter_chains.add(name=name, filter_chain_match=match)
            opaque.filters.append(tcp_filter(stat_prefix, service, port.port))
    if any(port.protocol is None for _, port in targets):
        listener.listener_filters.append(_listener_filter("tls_inspector", tls_inspector_pb2.TlsInspector()))
        listener.listener_filters.append(
            _listener_filter("http_inspector", http_inspector_pb2.HttpInspector())
        )
    fallback = FALLBACK[policy]
    listener.default_filter_chain.name = fallback
    listener.default_filter_chain.filters.append(tcp_proxy_filter(fallback, fallback))
    return listener


def fallback_cluster(policy: OutboundPolicy) -> cluster_pb2.Cluster:
    """Where ``virtualOutbound``'s default chain goes: the original destination, or nowhere."""
    cluster = cluster_pb2.Cluster(name=FALLBACK[policy], connect_timeout=seconds(_CONNECT_TIMEOUT))
    if policy == "ALLOW_ANY":
        cluster.type = cluster_pb2.Cluster.ORIGINAL_DST
        cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    else:
        cluster.type = cluster_pb2.Cluster.STATIC
    return cluster


def virtual_inbound(
    address: Address,
    ports: Sequence[ServicePort],
    tls: base_pb2.TransportSocket,
    callers: Callers,
    mtls: MtlsMode,
) -> listener_pb2.Listener:
    """The capture listener for connections to the pod's application ``ports``: mutual TLS
    always, authorized by ``callers`` (the service's RBAC: the HTTP filter on HTTP and gRPC
    ports, the network filter on the others); plaintext too under ``PERMISSIVE``
    (no identity to authorize: as before, any plaintext caller)."""
    listener = listener_pb2.Listener(
        name=VIRTUAL_INBOUND,
        address=capture_address(address),
        traffic_direction=base_pb2.INBOUND,
        listener_filters=[
            _listener_filter("original_dst", original_dst_pb2.OriginalDst()),
            _listener_filter("tls_inspector", tls_inspector_pb2.TlsInspector()),
        ],
    )
    transports = ("tls", "raw_buffer") if mtls == "PERMISSIVE" else ("tls",)
    for port in ports:
        cluster = inbound_cluster_name(port.port)
        for transport in transports:
            chain = listener.filter_chains.add(name=f"{cluster}{transport}")
            chain.filter_chain_match.destination_port.value = port.port
            chain.filter_chain_match.transport_protocol = transport
            authorized = transport == "tls"
            if authorized:
                chain.transport_socket.CopyFrom(tls)
            if port.protocol in ("http", "grpc"):
                manager = sidecar_http_manager(cluster)
                if authorized:
                    manager.http_filters.insert(0, callers.http)
                manager.route_config.CopyFrom(inbound_route_configuration(cluster, cluster))
                chain.filters.append(hcm_filter(manager))
            else:  # tcp, or detected: the caller's sidecar already chose; relay the bytes
                if authorized:
                    chain.filters.append(callers.network)
                chain.filters.append(tcp_proxy_filter(cluster, cluster))
    return listener
