"""QUIC mesh links (``transport: quic`` on a service): HTTP/3 beside TCP, with TCP as the fallback.

Owns the two changes ``translate.py`` makes for a service whose links run over QUIC:

- its sidecar's inbound gets a second listener, ``inbound-quic``, on the same address over UDP:
  the same DownstreamTlsContext (PQ mTLS, the service's ``allow`` as SAN matchers) inside a
  ``QuicDownstreamTransport``, and the same routes to the local application, over HTTP/3; the
  TCP ``inbound`` listener stays, for callers whose QUIC is blocked;
- its callers' clusters wrap their UpstreamTlsContext in a ``QuicUpstreamTransport`` with
  ``auto_config`` (HTTP/3, and HTTP/2 over TCP with the same TLS for a host whose QUIC is
  blocked: meshproxy counts it in ``upstream_http3_broken``; docs/quic.md).

Only HTTP and gRPC services run over QUIC (``load.py`` refuses ``transport: quic`` on a ``tcp``
service). Must not depend on: grpc, asyncio, the YAML loader, aioquic.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.transport_sockets.quic.v3 import quic_transport_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

from controlplane.mesh.envoy import hcm_filter, packed

QUIC_INBOUND = "inbound-quic"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_QUIC = "envoy.transport_sockets.quic"


def quic_inbound(tcp: listener_pb2.Listener, manager: hcm.HttpConnectionManager) -> listener_pb2.Listener:
    """The HTTP/3 twin of the TCP ``inbound`` listener ``tcp`` (its address and TLS), serving ``manager``."""
    listener = listener_pb2.Listener(name=QUIC_INBOUND)
    listener.address.CopyFrom(tcp.address)
    listener.address.socket_address.protocol = address_pb2.SocketAddress.UDP
    listener.udp_listener_config.quic_options.SetInParent()
    chain = listener.filter_chains.add()
    down = tls_pb2.DownstreamTlsContext()
    tcp.filter_chains[0].transport_socket.typed_config.Unpack(down)
    chain.transport_socket.CopyFrom(
        base_pb2.TransportSocket(
            name=_QUIC,
            typed_config=packed(quic_transport_pb2.QuicDownstreamTransport(downstream_tls_context=down)),
        )
    )
    h3 = hcm.HttpConnectionManager()
    h3.CopyFrom(manager)
    h3.stat_prefix = QUIC_INBOUND
    h3.codec_type = hcm.HttpConnectionManager.HTTP3
    chain.filters.append(hcm_filter(h3))
    return listener


def over_quic(cluster: cluster_pb2.Cluster) -> None:
    """Make ``cluster`` (PQ mTLS to a sidecar) try QUIC first, HTTP/2 over TCP when it is blocked."""
    up = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(up)
    cluster.transport_socket.CopyFrom(
        base_pb2.TransportSocket(
            name=_QUIC, typed_config=packed(quic_transport_pb2.QuicUpstreamTransport(upstream_tls_context=up))
        )
    )
    options = hpo.HttpProtocolOptions()
    options.auto_config.http2_protocol_options.SetInParent()
    options.auto_config.http3_protocol_options.SetInParent()
    cluster.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(packed(options))
