"""Builders of the xDS resources the control-plane tests serve: a proxyless gRPC service (an
``api_listener`` with RDS over ADS, a route with a weighted split, EDS clusters and their
endpoints), as the xds-protos messages `controlplane.xds.Snapshot` holds.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2, wrappers_pb2

from controlplane.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources, Snapshot


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def _any(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def api_listener(name: str, route_name: str) -> listener_pb2.Listener:
    manager = hcm.HttpConnectionManager(
        stat_prefix=name,
        rds=hcm.Rds(config_source=_ads(), route_config_name=route_name),
        http_filters=[hcm.HttpFilter(name="router", typed_config=_any(router_pb2.Router()))],
    )
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=_any(manager))
    )


def route(name: str, weights: dict[str, int], domain: str = "*") -> route_pb2.RouteConfiguration:
    if len(weights) == 1:
        action = route_components_pb2.RouteAction(cluster=next(iter(weights)))
    else:
        action = route_components_pb2.RouteAction(
            weighted_clusters=route_components_pb2.WeightedCluster(
                clusters=[
                    route_components_pb2.WeightedCluster.ClusterWeight(
                        name=c, weight=wrappers_pb2.UInt32Value(value=w)
                    )
                    for c, w in weights.items()
                ]
            )
        )
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=name,
                domains=[domain],
                routes=[
                    route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix=""), route=action)
                ],
            )
        ],
    )


def eds_cluster(name: str) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )


def endpoints(name: str, ports: list[int], host: str = "127.0.0.1") -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(region="local", zone="a"),
                load_balancing_weight=wrappers_pb2.UInt32Value(value=1),
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=address_pb2.Address(
                                socket_address=address_pb2.SocketAddress(address=host, port_value=port)
                            )
                        ),
                        health_status=health_check_pb2.HEALTHY,
                    )
                    for port in ports
                ],
            )
        ],
    )


def service_resources(service: str, weights: dict[str, int], ports: dict[str, list[int]]) -> Resources:
    """LDS ``service`` -> RDS ``service-route`` (weighted ``weights``) -> CDS/EDS per cluster."""
    route_name = f"{service}-route"
    return {
        LISTENER: {service: api_listener(service, route_name)},
        ROUTE: {route_name: route(route_name, weights)},
        CLUSTER: {c: eds_cluster(c) for c in ports},
        ENDPOINT: {c: endpoints(c, p) for c, p in ports.items()},
    }


def service_snapshot(
    version: str, service: str, weights: dict[str, int], ports: dict[str, list[int]]
) -> Snapshot:
    return Snapshot(version, service_resources(service, weights, ports))
