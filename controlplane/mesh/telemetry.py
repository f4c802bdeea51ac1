"""Istio's standard metrics on the sidecars' listeners: the istio.stats filters, as istiod adds them.

Owns ``with_istio_stats``: when the mesh config's ``sidecars.istio_metrics`` is on (the default,
as in Istio), every HTTP connection manager of a sidecar's listeners gets the ``istio.stats``
http filter first, and every tcp_proxy chain the ``istio.stats`` network filter before it, both
as istiod writes them (a TypedStruct of ``stats.PluginConfig`` with an empty value). The proxy
then exports ``istio_requests_total`` and the other standard series on its Prometheus endpoints
(15090 for a sidecar; docs/observability.md). Must not depend on grpc, asyncio or the loader.
"""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import any_pb2
from udpa.type.v1 import typed_struct_pb2

from controlplane.mesh.envoy import packed

ISTIO_STATS = "istio.stats"
# The TypedStruct's type_url: Istio's stats plugin configuration (its value is a Struct).
PLUGIN_CONFIG = "type.googleapis.com/stats.PluginConfig"


def _stats_config() -> any_pb2.Any:
    return packed(typed_struct_pb2.TypedStruct(type_url=PLUGIN_CONFIG))


def with_istio_stats(listener: listener_pb2.Listener) -> listener_pb2.Listener:
    """``listener`` (a sidecar's, just built) with the istio.stats filters on every chain."""
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        _add_to_chain(chain)
    return listener


def _add_to_chain(chain: lc.FilterChain) -> None:
    for index, entry in enumerate(chain.filters):
        config = entry.typed_config
        if config.Is(hcm.HttpConnectionManager.DESCRIPTOR):
            manager = hcm.HttpConnectionManager()
            config.Unpack(manager)
            # Just before the router, as istiod places it (after RBAC and the other filters).
            stats = hcm.HttpFilter(name=ISTIO_STATS, typed_config=_stats_config())
            http = [*manager.http_filters[:-1], stats, *manager.http_filters[-1:]]
            del manager.http_filters[:]
            manager.http_filters.extend(http)
            config.Pack(manager)
        elif config.Is(tcp_proxy_pb2.TcpProxy.DESCRIPTOR):
            network = list(chain.filters)
            network.insert(index, lc.Filter(name=ISTIO_STATS, typed_config=_stats_config()))
            del chain.filters[:]
            chain.filters.extend(network)
            return
