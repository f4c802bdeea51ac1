"""The fidelity table (meshproxy/config/fidelity.py) covers every field, and every refusal is real.

Three guarantees, each derived from the protobuf descriptors rather than listed by hand:
- every field of every message in ``TABLE`` is classified, and nothing else is (a protobuf
  upgrade that adds a field fails here until the field is classified);
- every message the compilers can reach (from the Bootstrap and from each ``Any`` type a compiler
  unpacks, through implemented fields) is in ``TABLE`` or in the shrinking ``UNCLASSIFIED`` list;
- every REFUSED field, set to a value that is not its default nor an allowed one inside a
  bootstrap that otherwise compiles, is reported with its field path and "not supported".
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from certs import make_leaf
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

import meshproxy.config
from meshproxy.config import fidelity
from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.config.compile import compile_listener
from meshproxy.config.fidelity import TABLE, UNCLASSIFIED, UNITS, Support
from meshproxy.errors import ConfigError

PREFIX = "type.googleapis.com/"
ROUTER = PREFIX + "envoy.extensions.filters.http.router.v3.Router"
HEALTH_CHECK = PREFIX + "envoy.extensions.filters.http.health_check.v3.HealthCheck"
CORS_POLICY = PREFIX + "envoy.extensions.filters.http.cors.v3.CorsPolicy"
COMPRESSOR = PREFIX + "envoy.extensions.filters.http.compressor.v3.Compressor"
COMPRESSION = PREFIX + "envoy.extensions.compression."
BROTLI = "compressor.v3.Brotli"
ZSTD = "compressor.v3.Zstd"
HCM = PREFIX + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY = PREFIX + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
TLS = PREFIX + "envoy.extensions.transport_sockets.tls.v3."
LOGS = PREFIX + "envoy.extensions.access_loggers."
UPSTREAM_HTTP = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
QUIC_DOWNSTREAM = "envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport"
QUIC_UPSTREAM = "envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport"
LB = "envoy.extensions.load_balancing_policies"
LB_POLICIES = (
    "round_robin.v3.RoundRobin",
    "least_request.v3.LeastRequest",
    "ring_hash.v3.RingHash",
    "maglev.v3.Maglev",
)


def _compiled_any_types() -> set[str]:
    """Every message type a compile_* module names by type URL: what an Any may hold."""
    found: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, str) and value.startswith(PREFIX):
            found.add(value.removeprefix(PREFIX))
        elif isinstance(value, dict):
            for item in (*value.keys(), *value.values()):
                collect(item)
        elif isinstance(value, tuple | list | set | frozenset):
            for item in value:
                collect(item)

    for info in pkgutil.iter_modules(meshproxy.config.__path__):
        if info.name.startswith("compile"):
            module = importlib.import_module(f"meshproxy.config.{info.name}")
            for value in vars(module).values():
                collect(value)
            found |= _named_in_calls(module)
    return found


def _named_in_calls(module: ModuleType) -> set[str]:
    """The message classes passed to ``type_url(...)`` or ``unpack(..., Class)`` in a module."""
    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("type_url", "unpack"):
            target: Any = module
            for part in ast.unparse(node.args[-1]).split("."):
                target = getattr(target, part, None)
            if target is not None and hasattr(target, "DESCRIPTOR"):
                names.add(target.DESCRIPTOR.full_name)
    return names


COMPILED_ANY = _compiled_any_types()
BOOTSTRAP = "envoy.config.bootstrap.v3.Bootstrap"


def _descriptor(name: str) -> Descriptor:
    return fidelity._descriptor(name)


def _reached() -> set[str]:
    """Messages reachable from the Bootstrap and the compiled Any types through implemented
    message fields (a message not in TABLE is a leaf here: its fields are not classified)."""
    seen: set[str] = set()
    todo = [BOOTSTRAP, *COMPILED_ANY]
    while todo:
        name = todo.pop()
        if name in seen or name.startswith("google.protobuf."):
            continue
        seen.add(name)
        for field in _descriptor(name).fields if name in TABLE else ():
            if TABLE[name][field.name].support is Support.IMPLEMENTED and field.message_type is not None:
                target = field.message_type
                if target.GetOptions().map_entry:
                    target = target.fields_by_name["value"].message_type
                if target is not None:
                    todo.append(target.full_name)
    return seen


def test_any_types_are_found_in_the_compilers() -> None:
    assert {
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "envoy.extensions.access_loggers.file.v3.FileAccessLog",
    } <= COMPILED_ANY


@pytest.mark.parametrize("name", sorted(TABLE))
def test_every_field_of_a_classified_message_is_classified(name: str) -> None:
    fields = {f.name for f in _descriptor(name).fields}
    assert sorted(fields - TABLE[name].keys()) == [], f"{name}: fields not classified"
    assert sorted(TABLE[name].keys() - fields) == [], f"{name}: classified fields the message lacks"


@pytest.mark.parametrize("name", sorted(TABLE))
def test_refused_and_accepted_fields_give_a_reason(name: str) -> None:
    for field, entry in TABLE[name].items():
        if entry.support is not Support.IMPLEMENTED:
            assert entry.reason.strip(), f"{name}.{field} has no reason"


def test_every_reachable_message_is_classified_or_listed() -> None:
    reached = _reached()
    assert sorted(reached - TABLE.keys() - UNCLASSIFIED) == [], "compiled messages missing from the table"
    assert sorted(UNCLASSIFIED & TABLE.keys()) == [], "classified now: remove them from UNCLASSIFIED"
    assert sorted(UNCLASSIFIED - reached) == [], "no longer reached: remove them from UNCLASSIFIED"


# --------------------------------------------------------------------------- refusals are real


def _base() -> dict[str, Any]:
    """A bootstrap holding at least one of every message in TABLE, that compiles cleanly."""
    leaf = make_leaf()
    certificate = {
        "certificate_chain": {"inline_string": leaf.cert_pem.decode()},
        "private_key": {"inline_string": leaf.key_pem.decode()},
    }
    address = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    upstream = {"socket_address": {"address": "127.0.0.1", "port_value": 8080}}
    manager = {
        "@type": HCM,
        "stat_prefix": "in",
        "local_reply_config": {"body_format": {"text_format": "%LOCAL_REPLY_BODY%"}},
        "access_log": [
            {"name": "file", "typed_config": {"@type": LOGS + "file.v3.FileAccessLog", "path": "/dev/null"}}
        ],
        "http_filters": [
            {
                "name": "envoy.filters.http.local_ratelimit",
                "typed_config": {
                    "@type": PREFIX + "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                    "stat_prefix": "rl",
                    "token_bucket": {"max_tokens": 1, "fill_interval": "1s"},
                },
            },
            {
                "name": "envoy.filters.http.fault",
                "typed_config": {"@type": PREFIX + "envoy.extensions.filters.http.fault.v3.HTTPFault"},
            },
            {
                "name": "envoy.filters.http.health_check",
                "typed_config": {"@type": HEALTH_CHECK, "pass_through_mode": False},
            },
            {
                "name": "envoy.filters.http.rbac",
                "typed_config": {"@type": PREFIX + "envoy.extensions.filters.http.rbac.v3.RBAC"},
            },
            {
                "name": "compress",
                "typed_config": {
                    "@type": COMPRESSOR,
                    "compressor_library": {
                        "name": "br",
                        "typed_config": {"@type": COMPRESSION + "brotli." + BROTLI},
                    },
                    "response_direction_config": {"disable_on_etag_header": True},
                },
            },
            {
                "name": "compress-zstd",
                "typed_config": {
                    "@type": COMPRESSOR,
                    "compressor_library": {
                        "name": "zstd",
                        "typed_config": {"@type": COMPRESSION + "zstd." + ZSTD},
                    },
                },
            },
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}},
        ],
        "tracing": {
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": {
                    "@type": PREFIX + "envoy.config.trace.v3.OpenTelemetryConfig",
                    "grpc_service": {"envoy_grpc": {"cluster_name": "c"}},
                },
            }
        },
        "route_config": {
            "name": "r",
            "typed_per_filter_config": {
                "cors": {"@type": CORS_POLICY},
                "compress": {"@type": COMPRESSOR + "PerRoute", "disabled": True},
            },
            "request_headers_to_add": [{"header": {"key": "x-a", "value": "1"}}],
            "virtual_hosts": [
                {
                    "name": "v",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {
                                "cluster": "c",
                                "retry_policy": {"retry_on": "5xx"},
                                "hash_policy": [{"cookie": {"name": "s"}}, {"header": {"header_name": "x"}}],
                                "request_mirror_policies": [{"cluster": "c"}],
                            },
                        }
                    ],
                }
            ],
        },
    }
    tcp = {
        "@type": TCP_PROXY,
        "stat_prefix": "tcp",
        "weighted_clusters": {"clusters": [{"name": "c", "weight": 1}]},
        "access_log": [{"name": "out", "typed_config": {"@type": LOGS + "stream.v3.StdoutAccessLog"}}],
    }
    rbac = {
        "@type": PREFIX + "envoy.extensions.filters.network.rbac.v3.RBAC",
        "stat_prefix": "tcp",
        "rules": {"policies": {"p": {"permissions": [{"any": True}], "principals": [{"any": True}]}}},
    }
    cluster = {
        "name": "c",
        "type": "STATIC",
        "load_assignment": {
            "cluster_name": "c",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": upstream, "health_check_config": {"port_value": 8080}}}
                    ]
                }
            ],
        },
        "health_checks": [
            {"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1, **check}
            for check in ({"http_health_check": {"path": "/h"}}, {"tcp_health_check": {}})
        ],
        "circuit_breakers": {"thresholds": [{"max_connections": 10}]},
        "outlier_detection": {"consecutive_5xx": 5},
        "transport_socket": {
            "name": "tls",
            "typed_config": {"@type": TLS + "UpstreamTlsContext", "sni": "c"},
        },
        "typed_extension_protocol_options": {UPSTREAM_HTTP: {"@type": PREFIX + UPSTREAM_HTTP}},
        "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 30}},
    }
    policies = [
        {"typed_extension_config": {"name": kind, "typed_config": {"@type": f"{PREFIX}{LB}.{kind}"}}}
        for kind in LB_POLICIES
    ]
    return {
        "admin": {"address": address},
        "static_resources": {
            "listeners": [
                {
                    "name": "http",
                    "address": address,
                    "listener_filters": [{"name": "envoy.filters.listener.tls_inspector"}],
                    "filter_chains": [
                        {
                            "filters": [{"name": "hcm", "typed_config": manager}],
                            "transport_socket": {
                                "name": "tls",
                                "typed_config": {
                                    "@type": TLS + "DownstreamTlsContext",
                                    "common_tls_context": {"tls_certificates": [certificate]},
                                },
                            },
                        }
                    ],
                },
                {
                    "name": "tcp",
                    "address": address,
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "rbac", "typed_config": rbac},
                                {"name": "tcp", "typed_config": tcp},
                            ]
                        }
                    ],
                },
                {
                    "name": "quic",
                    "address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": 0, "protocol": "UDP"}
                    },
                    "udp_listener_config": {
                        "quic_options": {"quic_protocol_options": {"max_concurrent_streams": 9}}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "hcm",
                                    "typed_config": {
                                        "@type": HCM,
                                        "stat_prefix": "h3",
                                        "codec_type": "HTTP3",
                                        "http3_protocol_options": {},
                                        "http_filters": [
                                            {"name": "router", "typed_config": {"@type": ROUTER}}
                                        ],
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "q",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {"match": {"prefix": "/"}, "route": {"cluster": "c"}}
                                                    ],
                                                }
                                            ]
                                        },
                                    },
                                }
                            ],
                            "transport_socket": {
                                "name": "quic",
                                "typed_config": {
                                    "@type": PREFIX + QUIC_DOWNSTREAM,
                                    "downstream_tls_context": {
                                        "common_tls_context": {"tls_certificates": [certificate]}
                                    },
                                },
                            },
                        }
                    ],
                },
            ],
            "clusters": [
                cluster,
                {**cluster, "name": "d", "load_balancing_policy": {"policies": policies}},
                {
                    **cluster,
                    "name": "q",
                    "transport_socket": {
                        "name": "quic",
                        "typed_config": {
                            "@type": PREFIX + QUIC_UPSTREAM,
                            "upstream_tls_context": {"sni": "q"},
                        },
                    },
                    "typed_extension_protocol_options": {
                        UPSTREAM_HTTP: {
                            "@type": PREFIX + UPSTREAM_HTTP,
                            "auto_config": {"http3_protocol_options": {}},
                        }
                    },
                },
            ],
        },
    }


class MapKey(str):
    """A key of a protobuf map, shown as ["key"] in a field path."""

    __slots__ = ()


LISTENER: tuple[str | int, ...] = ("static_resources", "listeners", 0)
CHAIN = (*LISTENER, "filter_chains", 0)
MANAGER = (*CHAIN, "filters", 0, "typed_config")
ROUTE = (*MANAGER, "route_config", "virtual_hosts", 0, "routes", 0)
OTEL = (*MANAGER, "tracing", "provider", "typed_config")
TCP_RBAC = ("static_resources", "listeners", 1, "filter_chains", 0, "filters", 0, "typed_config")
TCP = ("static_resources", "listeners", 1, "filter_chains", 0, "filters", 1, "typed_config")
RBAC_POLICY = (*TCP_RBAC, "rules", "policies", MapKey("p"))
CLUSTER: tuple[str | int, ...] = ("static_resources", "clusters", 0)
QUIC_LISTENER: tuple[str | int, ...] = ("static_resources", "listeners", 2)
QUIC_OPTIONS = (*QUIC_LISTENER, "udp_listener_config", "quic_options")
QUIC_MANAGER = (*QUIC_LISTENER, "filter_chains", 0, "filters", 0, "typed_config")
TLS_PACKAGE = "envoy.extensions.transport_sockets.tls.v3"
DOWN_TLS = (*CHAIN, "transport_socket", "typed_config", "common_tls_context")
UP_TLS = (*CLUSTER, "transport_socket", "typed_config", "common_tls_context")
LOCALITY = (*CLUSTER, "load_assignment", "endpoints", 0)
TYPED_LB = ("static_resources", "clusters", 1, "load_balancing_policy", "policies")
NAMESPACES = {
    "bootstrap": "envoy.config.bootstrap.v3.",
    "listener": "envoy.config.listener.v3.",
    "route": "envoy.config.route.v3.",
    "hcm": "envoy.extensions.filters.network.http_connection_manager.v3.",
    "tcp": "envoy.extensions.filters.network.tcp_proxy.v3.",
}
# Where _base() holds each message of TABLE.
WHERE: dict[str, tuple[str | int, ...]] = {
    "envoy.config.bootstrap.v3.Bootstrap": (),
    "envoy.config.bootstrap.v3.Bootstrap.StaticResources": ("static_resources",),
    "envoy.config.bootstrap.v3.Admin": ("admin",),
    "envoy.config.listener.v3.Listener": LISTENER,
    "envoy.config.listener.v3.ListenerFilter": (*LISTENER, "listener_filters", 0),
    "envoy.config.listener.v3.FilterChain": CHAIN,
    "envoy.config.listener.v3.FilterChainMatch": (*CHAIN, "filter_chain_match"),
    "envoy.config.listener.v3.Filter": (*CHAIN, "filters", 0),
    NAMESPACES["hcm"] + "HttpConnectionManager": MANAGER,
    NAMESPACES["hcm"] + "HttpFilter": (*MANAGER, "http_filters", 0),
    NAMESPACES["hcm"] + "HttpConnectionManager.Tracing": (*MANAGER, "tracing"),
    "envoy.config.trace.v3.OpenTelemetryConfig": OTEL,
    "envoy.config.core.v3.GrpcService": (*OTEL, "grpc_service"),
    "envoy.config.core.v3.GrpcService.EnvoyGrpc": (*OTEL, "grpc_service", "envoy_grpc"),
    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit": (
        *MANAGER,
        "http_filters",
        0,
        "typed_config",
    ),
    "envoy.extensions.filters.http.fault.v3.HTTPFault": (*MANAGER, "http_filters", 1, "typed_config"),
    "envoy.extensions.filters.http.health_check.v3.HealthCheck": (
        *MANAGER,
        "http_filters",
        2,
        "typed_config",
    ),
    "envoy.extensions.filters.http.rbac.v3.RBAC": (*MANAGER, "http_filters", 3, "typed_config"),
    "envoy.extensions.filters.http.router.v3.Router": (*MANAGER, "http_filters", 6, "typed_config"),
    COMPRESSOR.removeprefix(PREFIX): (*MANAGER, "http_filters", 4, "typed_config"),
    COMPRESSOR.removeprefix(PREFIX) + ".ResponseDirectionConfig": (
        *MANAGER,
        "http_filters",
        4,
        "typed_config",
        "response_direction_config",
    ),
    COMPRESSOR.removeprefix(PREFIX) + "PerRoute": (
        *MANAGER,
        "route_config",
        "typed_per_filter_config",
        MapKey("compress"),
    ),
    "envoy.extensions.compression.brotli." + BROTLI: (
        *MANAGER,
        "http_filters",
        4,
        "typed_config",
        "compressor_library",
        "typed_config",
    ),
    "envoy.extensions.compression.zstd." + ZSTD: (
        *MANAGER,
        "http_filters",
        5,
        "typed_config",
        "compressor_library",
        "typed_config",
    ),
    "envoy.config.core.v3.SubstitutionFormatString": (*MANAGER, "local_reply_config", "body_format"),
    CORS_POLICY.removeprefix(PREFIX): (*MANAGER, "route_config", "typed_per_filter_config", MapKey("cors")),
    "envoy.config.core.v3.HeaderValueOption": (*MANAGER, "route_config", "request_headers_to_add", 0),
    "envoy.config.route.v3.RouteAction.HashPolicy": (*ROUTE, "route", "hash_policy", 0),
    "envoy.config.route.v3.RouteAction.RequestMirrorPolicy": (*ROUTE, "route", "request_mirror_policies", 0),
    "envoy.config.route.v3.RouteAction.HashPolicy.Cookie": (*ROUTE, "route", "hash_policy", 0, "cookie"),
    "envoy.config.route.v3.RouteAction.HashPolicy.Header": (*ROUTE, "route", "hash_policy", 1, "header"),
    "envoy.config.accesslog.v3.AccessLog": (*MANAGER, "access_log", 0),
    "envoy.extensions.access_loggers.file.v3.FileAccessLog": (*MANAGER, "access_log", 0, "typed_config"),
    "envoy.config.route.v3.RouteConfiguration": (*MANAGER, "route_config"),
    "envoy.config.route.v3.VirtualHost": (*MANAGER, "route_config", "virtual_hosts", 0),
    "envoy.config.route.v3.Route": ROUTE,
    "envoy.config.route.v3.RouteMatch": (*ROUTE, "match"),
    "envoy.config.route.v3.RouteAction": (*ROUTE, "route"),
    "envoy.config.route.v3.RetryPolicy": (*ROUTE, "route", "retry_policy"),
    "envoy.config.core.v3.TransportSocket": (*CHAIN, "transport_socket"),
    f"{TLS_PACKAGE}.CommonTlsContext": DOWN_TLS,
    f"{TLS_PACKAGE}.TlsParameters": (*DOWN_TLS, "tls_params"),
    f"{TLS_PACKAGE}.TlsCertificate": (*DOWN_TLS, "tls_certificates", 0),
    f"{TLS_PACKAGE}.CertificateValidationContext": (*UP_TLS, "validation_context"),
    f"{TLS_PACKAGE}.CommonTlsContext.CombinedCertificateValidationContext": (
        *UP_TLS,
        "combined_validation_context",
    ),
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext": (
        *CHAIN,
        "transport_socket",
        "typed_config",
    ),
    NAMESPACES["tcp"] + "TcpProxy": TCP,
    NAMESPACES["tcp"] + "TcpProxy.WeightedCluster": (*TCP, "weighted_clusters"),
    NAMESPACES["tcp"] + "TcpProxy.WeightedCluster.ClusterWeight": (*TCP, "weighted_clusters", "clusters", 0),
    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog": (*TCP, "access_log", 0, "typed_config"),
    "envoy.extensions.filters.network.rbac.v3.RBAC": TCP_RBAC,
    "envoy.config.rbac.v3.RBAC": (*TCP_RBAC, "rules"),
    "envoy.config.rbac.v3.Policy": RBAC_POLICY,
    "envoy.config.rbac.v3.Permission": (*RBAC_POLICY, "permissions", 0),
    "envoy.config.rbac.v3.Principal": (*RBAC_POLICY, "principals", 0),
    "envoy.config.cluster.v3.Cluster": CLUSTER,
    "envoy.config.core.v3.HealthCheck": (*CLUSTER, "health_checks", 0),
    "envoy.config.core.v3.HealthCheck.HttpHealthCheck": (*CLUSTER, "health_checks", 0, "http_health_check"),
    "envoy.config.core.v3.HealthCheck.TcpHealthCheck": (*CLUSTER, "health_checks", 1, "tcp_health_check"),
    "envoy.config.cluster.v3.CircuitBreakers": (*CLUSTER, "circuit_breakers"),
    "envoy.config.cluster.v3.OutlierDetection": (*CLUSTER, "outlier_detection"),
    "envoy.config.cluster.v3.UpstreamConnectionOptions": (*CLUSTER, "upstream_connection_options"),
    "envoy.config.core.v3.TcpKeepalive": (*CLUSTER, "upstream_connection_options", "tcp_keepalive"),
    "envoy.config.endpoint.v3.ClusterLoadAssignment": (*CLUSTER, "load_assignment"),
    "envoy.config.endpoint.v3.ClusterLoadAssignment.Policy": (*CLUSTER, "load_assignment", "policy"),
    "envoy.config.endpoint.v3.LocalityLbEndpoints": LOCALITY,
    "envoy.config.endpoint.v3.LbEndpoint": (*LOCALITY, "lb_endpoints", 0),
    "envoy.config.endpoint.v3.Endpoint": (*LOCALITY, "lb_endpoints", 0, "endpoint"),
    "envoy.config.endpoint.v3.Endpoint.HealthCheckConfig": (
        *LOCALITY,
        "lb_endpoints",
        0,
        "endpoint",
        "health_check_config",
    ),
    UPSTREAM_HTTP: (*CLUSTER, "typed_extension_protocol_options", MapKey(UPSTREAM_HTTP)),
    "envoy.config.cluster.v3.Cluster.LeastRequestLbConfig": (*CLUSTER, "least_request_lb_config"),
    "envoy.config.cluster.v3.Cluster.CommonLbConfig": (*CLUSTER, "common_lb_config"),
    **{
        f"{LB}.{kind}": (*TYPED_LB, index, "typed_extension_config", "typed_config")
        for index, kind in enumerate(LB_POLICIES)
    },
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds": (*CLUSTER, "circuit_breakers", "thresholds", 0),
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget": (
        *CLUSTER,
        "circuit_breakers",
        "thresholds",
        0,
        "retry_budget",
    ),
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": (
        *CLUSTER,
        "transport_socket",
        "typed_config",
    ),
    "envoy.config.listener.v3.UdpListenerConfig": (*QUIC_LISTENER, "udp_listener_config"),
    "envoy.config.listener.v3.QuicProtocolOptions": QUIC_OPTIONS,
    "envoy.config.core.v3.QuicProtocolOptions": (*QUIC_OPTIONS, "quic_protocol_options"),
    QUIC_DOWNSTREAM: (*QUIC_LISTENER, "filter_chains", 0, "transport_socket", "typed_config"),
    "envoy.config.core.v3.Http3ProtocolOptions": (*QUIC_MANAGER, "http3_protocol_options"),
    UPSTREAM_HTTP + ".AutoHttpConfig": (
        "static_resources",
        "clusters",
        2,
        "typed_extension_protocol_options",
        MapKey(UPSTREAM_HTTP),
        "auto_config",
    ),
}

_WELL_KNOWN: dict[str, Any] = {
    "google.protobuf.Duration": "1.5s",
    "google.protobuf.Struct": {"a": 1},
    "google.protobuf.Value": 1,
    "google.protobuf.ListValue": [1],
    "google.protobuf.Any": {"@type": ROUTER},
    "google.protobuf.FieldMask": "a",
    "google.protobuf.Timestamp": "2026-01-01T00:00:00Z",
}


def sample(field: FieldDescriptor, avoid: tuple[Any, ...] = (), depth: int = 0) -> Any:
    """A JSON value for ``field`` that is neither its default nor one of ``avoid``."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return {"k": _single(field.message_type.fields_by_name["value"], avoid, depth)}
    value = _single(field, avoid, depth)
    return [value] if field.is_repeated else value


def _single(field: FieldDescriptor, avoid: tuple[Any, ...], depth: int) -> Any:
    if field.message_type is not None:
        name = field.message_type.full_name
        if name in _WELL_KNOWN:
            return _WELL_KNOWN[name]
        if name.startswith("google.protobuf.") and name.endswith("Value"):  # a wrapper
            return _single(field.message_type.fields_by_name["value"], avoid, depth)
        return _message(field.message_type, depth + 1)
    if field.enum_type is not None:
        default = -1 if field.is_repeated else 0  # any element of a list says something
        return next(v.name for v in field.enum_type.values if v.number != default and v.name not in avoid)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True not in avoid
    if field.type == FieldDescriptor.TYPE_STRING:
        return "x"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return "eA=="
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return 0.5
    return next(n for n in (1, 2) if n not in avoid)


def _message(descriptor: Descriptor, depth: int) -> dict[str, Any]:
    """A message with one field set: a scalar one if it has any, else its first message field."""
    scalars = [f for f in descriptor.fields if f.message_type is None]
    chosen = scalars[0] if scalars else (descriptor.fields[0] if descriptor.fields and depth < 4 else None)
    return {} if chosen is None else {chosen.name: sample(chosen, (), depth)}


def _path(keys: tuple[str | int, ...]) -> str:
    text = ""
    for key in keys:
        if isinstance(key, MapKey):
            text += f'["{key}"]'
        else:
            text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


def _refused() -> Iterator[tuple[str, str]]:
    for name, row in TABLE.items():
        for field, entry in row.items():
            if entry.support is Support.REFUSED:
                yield name, field


def test_the_base_bootstrap_holds_every_message_with_refused_fields_and_compiles() -> None:
    assert sorted({name for name, _ in _refused()} - WHERE.keys()) == [], "say where _base() holds these"
    parse_bootstrap(json.dumps(_base()), source="base")


@pytest.mark.parametrize(("name", "field"), sorted(_refused()), ids=lambda v: v.rsplit(".", 1)[-1])
def test_a_refused_field_is_reported_with_its_path(name: str, field: str) -> None:
    config = _base()
    target: Any = config
    for key in WHERE[name]:
        target = target[key] if isinstance(key, int) else target.setdefault(key, {})
    descriptor = _descriptor(name).fields_by_name[field]
    oneof = descriptor.containing_oneof
    for sibling in oneof.fields if oneof is not None else ():
        target.pop(sibling.name, None)
    entry = TABLE[name][field]
    target[field] = sample(descriptor, entry.allowed)
    with pytest.raises(ConfigError) as raised:
        parse_bootstrap(json.dumps(config), source="t")
    path = _path((*WHERE[name], field))
    matching = [p for p in raised.value.problems if p.startswith(path) and "not supported" in p]
    assert matching, f"no refusal at {path}: {raised.value.problems}"


@pytest.mark.parametrize(
    ("where", "field", "value"),
    [
        (LISTENER, "bind_to_port", True),
        (CLUSTER, "dns_lookup_family", "ALL"),
        ((*CLUSTER, "health_checks", 0), "reuse_connection", False),
        (TCP, "max_connect_attempts", 1),
        (CHAIN, "use_proxy_proto", False),
    ],
)
def test_a_refused_field_set_to_meshproxys_behaviour_is_accepted(
    where: tuple[str | int, ...], field: str, value: Any
) -> None:
    config = _base()
    target: Any = config
    for key in where:
        target = target[key]
    target[field] = value
    parse_bootstrap(json.dumps(config), source="t")


def test_an_empty_refused_message_says_nothing_and_is_accepted() -> None:
    config = _base()
    manager: Any = config
    for key in MANAGER:
        manager = manager[key]
    manager["http_protocol_options"] = {}
    parse_bootstrap(json.dumps(config), source="t")


def test_a_refused_field_in_a_resource_from_xds_is_a_problem_naming_its_path() -> None:
    """The xDS client compiles each resource with compile_listener: the problem NACKs it."""
    listener = listener_pb2.Listener()
    json_format.ParseDict(_base()["static_resources"]["listeners"][0], listener)
    manager = hcm.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    manager.xff_num_trusted_hops = 2
    listener.filter_chains[0].filters[0].typed_config.Pack(manager)
    problems: list[str] = []
    assert compile_listener(listener, "resources[0]", problems) is None
    assert problems == [
        "resources[0].filter_chains[0].filters[0].typed_config.xff_num_trusted_hops: is not supported: "
        + TABLE[NAMESPACES["hcm"] + "HttpConnectionManager"]["xff_num_trusted_hops"].reason
    ]


def test_walks_stop_at_resources_compiled_on_their_own() -> None:
    """An inline route_config is walked by the route compiler, not again by the listener's."""
    config = _base()
    vhost: Any = config
    for key in WHERE["envoy.config.route.v3.VirtualHost"]:
        vhost = vhost[key]
    vhost["cors"] = {"allow_credentials": True}
    with pytest.raises(ConfigError) as raised:
        parse_bootstrap(json.dumps(config), source="t")
    assert len([p for p in raised.value.problems if ".cors: is not supported" in p]) == 1
    assert "envoy.config.route.v3.RouteConfiguration" in UNITS
