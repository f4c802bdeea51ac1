"""What meshproxy does with every field of each Envoy message it compiles: the fidelity table.

Envoy's configuration language is meshproxy's, so a field is never silently dropped when dropping
it would change what the configuration means (issue 15, DESIGN.md decision 1). Each field of each
message in ``TABLE`` is one of:

- IMPLEMENTED: the compiler reads it (and may refuse some values, with its own message);
- REFUSED: setting it to anything but its default (or an ``allowed`` value, one that is
  meshproxy's only behaviour) is a problem ``field.path: is not supported: <reason>``. Most are
  refused here, by ``refuse_unsupported``; those marked ``by_compiler`` are refused by the
  ``compile_*`` module that reads the message, with a message of its own;
- ACCEPTED: read and dropped, with the reason it changes nothing that matters (a stats name,
  metadata for filters meshproxy does not run, a tuning knob of Envoy's threading).

``refuse_unsupported`` is called by the compilers once per unit (bootstrap, listener, cluster,
route configuration, load assignment, and each route and endpoint, so the compilers' steps stay
short) and walks the message tree through implemented fields, unpacking an ``Any`` whose
type the table classifies; it stops at the units compiled on their own (``UNITS``), so nothing
is said twice. The same rule holds over xDS: a refused field NACKs the resource, naming its path.

Messages reached through an implemented field but not yet classified field by field are listed
in ``UNCLASSIFIED`` (their compilers refuse what they cannot run); tests/unit/config/test_fidelity.py
walks the descriptors so a protobuf upgrade or a newly compiled message cannot slip through, and
proves each refusal by compiling it. docs/configuration.md's "Fields meshproxy does not run" is
generated from this table (``python -m meshproxy.config.fidelity``) and checked against it.
Must not depend on the per-resource compilers (they call it), on asyncio or on sockets.
It is one piece past 500 lines because it is one table (a row per message, as long as Envoy's
messages are); the walk and the docs generator are the last hundred lines.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from meshproxy.config.compile_common import Ctx


class Support(enum.Enum):
    IMPLEMENTED = "implemented"
    REFUSED = "refused"
    ACCEPTED = "accepted"


@dataclass(frozen=True, slots=True)
class Field:
    support: Support
    reason: str = ""
    by_compiler: bool = False  # REFUSED by the compile_* module itself, in its own words
    allowed: tuple[str | int | bool, ...] = ()  # REFUSED values that are meshproxy's behaviour


IMPLEMENTED = Field(Support.IMPLEMENTED)
BY_COMPILER = Field(Support.REFUSED, "refused by the compiler with its own message", by_compiler=True)


def refused(reason: str, *, allowed: tuple[str | int | bool, ...] = ()) -> Field:
    return Field(Support.REFUSED, reason, allowed=allowed)


def accepted(reason: str) -> Field:
    return Field(Support.ACCEPTED, reason)


def _message(implemented: str = "", by_compiler: str = "", **others: Field) -> dict[str, Field]:
    """A message's row: space-separated names of implemented and compiler-refused fields, and
    the refused and accepted ones by keyword."""
    row = dict.fromkeys(implemented.split(), IMPLEMENTED) | dict.fromkeys(by_compiler.split(), BY_COMPILER)
    return row | others


# Reasons shared by several fields.
_METADATA = accepted("metadata is read only by filters and extensions meshproxy does not run")
_STAT_NAME = accepted("names stats; meshproxy names its own (docs/stats.md)")
_NO_RUNTIME = "meshproxy has no runtime layer"
_ONE_SPAN = "meshproxy records one span per request and sidecar, named <authority><path>"
_NO_FILTER = "meshproxy runs no such filter"
_NO_LOG_OPTIONS = "meshproxy writes one access log line when a request or session ends"
_SYSTEM_DNS = "meshproxy resolves names with the system resolver (getaddrinfo)"
_NO_MIRROR = "set request_mirror_policies on the route action"
_NO_CORS = (
    "give the CORS policy as typed_per_filter_config (envoy.extensions.filters.http.cors.v3.CorsPolicy)"
)
_COMPRESSOR = "envoy.extensions.filters.http.compressor.v3"
_DEPRECATED_COMPRESSOR = "deprecated in Envoy; set it in response_direction_config"
_COMPRESSED_AS_PRODUCED = accepted("compressed bytes are written as the compressor produces them")
_NO_GLOBAL_RATE_LIMIT = "global rate limiting (a rate limit service) is not supported"
_ONE_LOOP = accepted("tunes Envoy's worker threads; meshproxy runs one event loop")
_OWN_ADDRESS = "health checks probe the endpoint's own address"
_LOG_FORMAT = accepted("meshproxy writes its own JSON line format (docs/configuration.md#access-logs)")
_SESSION = "TLS session resumption settings are not supported"
_QUIC_EXTENSION = "QUICHE extensions do not apply to aioquic"
_LB = "envoy.extensions.load_balancing_policies"
_TLS = "envoy.extensions.transport_sockets.tls.v3"
_NO_SLOW_START = "slow start is not supported: a new host gets its full share at once"
_CONSISTENT_HASHING = "hashing on host names and bounded loads are not supported"
_ZONE_AWARE = accepted("zone-aware routing needs cluster_manager.local_cluster_name, which is refused")


TABLE: dict[str, dict[str, Field]] = {
    "envoy.config.bootstrap.v3.Bootstrap": _message(
        "node static_resources dynamic_resources admin overload_manager",
        node_context_params=accepted("names node fields for xdstp:// context parameters, which are refused"),
        cluster_manager=refused("cluster manager settings (local cluster, default bind, load stats)"),
        hds_config=refused("the health discovery service is not supported"),
        flags_path=accepted("Envoy's hot-restart and drain flag files; meshproxy has no hot restart"),
        stats_sinks=refused("stats are exported on the admin port only (/stats/prometheus)"),
        deferred_stat_options=accepted("when Envoy allocates stats; meshproxy's are fixed"),
        stats_config=accepted("tag extraction and inclusion for Envoy's stats; meshproxy's are fixed"),
        stats_flush_interval=accepted("flushing to sinks, which are refused"),
        stats_flush_on_admin=accepted("flushing to sinks, which are refused"),
        stats_eviction_interval=accepted("meshproxy's stats are a fixed set, never evicted"),
        watchdog=accepted("Envoy's worker-thread watchdog; meshproxy runs one event loop"),
        watchdogs=accepted("Envoy's worker-thread watchdogs; meshproxy runs one event loop"),
        tracing=refused("configure tracing on the connection manager (tracing.provider)"),
        layered_runtime=accepted(f"{_NO_RUNTIME}: every runtime key takes its documented default"),
        enable_dispatcher_stats=accepted("adds Envoy event-loop stats"),
        header_prefix=refused("meshproxy's own headers keep the x-envoy- prefix"),
        stats_server_version_override=accepted("a number shown in server stats"),
        use_tcp_for_dns_lookups=accepted(f"{_SYSTEM_DNS}, which chooses the transport"),
        dns_resolution_config=refused(f"{_SYSTEM_DNS}; resolvers cannot be set"),
        typed_dns_resolver_config=refused(f"{_SYSTEM_DNS}; resolvers cannot be set"),
        bootstrap_extensions=refused("bootstrap extensions are not supported"),
        fatal_actions=accepted("Envoy's crash handlers"),
        config_sources=refused("xdstp:// config sources are not supported"),
        default_config_source=refused("xdstp:// config sources are not supported"),
        default_socket_interface=refused("custom socket interfaces are not supported"),
        certificate_provider_instances=refused("certificate providers are not supported"),
        inline_headers=accepted("a header-map performance hint"),
        perf_tracing_file_path=accepted("Envoy's performance tracing of itself"),
        default_regex_engine=accepted("RE2 is the only engine Envoy has, and meshproxy's"),
        xds_delegate_extension=refused("xDS delegate extensions are not supported"),
        xds_config_tracker_extension=accepted("observes xDS updates; changes none"),
        listener_manager=refused("custom listener managers are not supported"),
        application_log_config=accepted("the format of Envoy's own log; meshproxy logs its own"),
        grpc_async_client_manager_config=accepted("the cache of Envoy's gRPC clients"),
        memory_allocator_manager=accepted("tcmalloc tuning"),
    ),
    "envoy.config.bootstrap.v3.Bootstrap.StaticResources": _message("listeners clusters secrets"),
    "envoy.config.bootstrap.v3.Admin": _message(
        "access_log access_log_path address",
        profile_path=accepted("Envoy's CPU profiler output; meshproxy has no profiler endpoint"),
        socket_options=refused("socket options are not supported"),
        ignore_global_conn_limit=refused("the admin listener's place in the global limit is fixed"),
        allow_paths=refused("the admin interface serves every path it has"),
    ),
    "envoy.config.listener.v3.Listener": _message(
        "name address additional_addresses filter_chains use_original_dst default_filter_chain "
        "per_connection_buffer_limit_bytes listener_filters listener_filters_timeout traffic_direction",
        stat_prefix=_STAT_NAME,
        fcds_config=refused("filter chain discovery is not supported"),
        filter_chain_matcher=refused("the matcher API is not supported; use filter_chain_match"),
        metadata=_METADATA,
        deprecated_v1=refused("use bind_to_port"),
        drain_type=refused("MODIFY_ONLY is not supported"),
        continue_on_listener_filters_timeout=refused(
            "a connection whose listener filters time out is closed"
        ),
        transparent=refused("IP_TRANSPARENT (TPROXY) is not supported; use REDIRECT capture"),
        freebind=refused("IP_FREEBIND is not supported"),
        socket_options=refused("socket options are not supported"),
        tcp_fast_open_queue_length=accepted("TCP Fast Open saves a round trip; connections behave the same"),
        udp_listener_config=IMPLEMENTED,
        api_listener=refused("API listeners are not supported"),
        connection_balance_config=_ONE_LOOP,
        reuse_port=_ONE_LOOP,
        enable_reuse_port=_ONE_LOOP,
        access_log=refused(
            "listener access logs (connections no filter chain took) are not written; "
            "use the network filter's access_log"
        ),
        tcp_backlog_size=accepted("the listen backlog; the kernel's default is used"),
        max_connections_to_accept_per_socket_event=_ONE_LOOP,
        bind_to_port=refused("every listener binds its address", allowed=(True,)),
        internal_listener=refused("internal listeners are not supported"),
        enable_mptcp=refused("MPTCP is not supported"),
        ignore_global_conn_limit=refused("every listener counts against the global connection limit"),
        bypass_overload_manager=refused("every listener is subject to the overload manager"),
    ),
    # QUIC listeners (compile_quic.py, docs/quic.md).
    "envoy.config.listener.v3.UdpListenerConfig": _message(
        "quic_options",
        downstream_socket_config=refused("UDP socket settings (receive buffer, GRO) are not supported"),
        udp_packet_packet_writer_config=refused("UDP packet writers (GSO) are not supported"),
    ),
    "envoy.config.listener.v3.QuicProtocolOptions": _message(
        "quic_protocol_options idle_timeout crypto_handshake_timeout enabled",
        packets_to_read_to_connection_count_ratio=_ONE_LOOP,
        max_sessions_per_event_loop=_ONE_LOOP,
        crypto_stream_config=refused(_QUIC_EXTENSION),
        proof_source_config=refused(_QUIC_EXTENSION),
        connection_id_generator_config=refused(_QUIC_EXTENSION),
        connection_debug_visitor_config=refused(_QUIC_EXTENSION),
        server_preferred_address_config=refused("a server preferred address is not advertised"),
        send_disable_active_migration=refused("clients may always migrate (RFC 9000 §9)", allowed=(False,)),
        save_cmsg_config=refused("saving control messages of UDP reads is not supported"),
        reject_new_connections=refused("a QUIC listener accepts new connections", allowed=(False,)),
    ),
    "envoy.config.core.v3.RuntimeFeatureFlag": _message("default_value", runtime_key=accepted(_NO_RUNTIME)),
    "envoy.config.core.v3.QuicProtocolOptions": _message(
        "max_concurrent_streams initial_stream_window_size initial_connection_window_size max_packet_length "
        "idle_network_timeout",
        num_timeouts_to_trigger_port_migration=refused(
            "meshproxy does not migrate its own port", allowed=(0,)
        ),
        connection_keepalive=refused("QUIC keep-alive PINGs are not sent; idle connections time out"),
        connection_options=refused("QUICHE connection options do not apply to aioquic"),
        client_connection_options=refused("QUICHE connection options do not apply to aioquic"),
    ),
    "envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport": _message("upstream_tls_context"),
    "envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport": _message(
        "downstream_tls_context",
        enable_early_data=refused(
            "0-RTT is off: early data can be replayed (RFC 9001 §9.2)", allowed=(False,)
        ),
    ),
    "envoy.config.core.v3.Http3ProtocolOptions": _message(
        "quic_protocol_options",
        override_stream_error_on_invalid_http_message=refused(
            "an invalid HTTP/3 message resets its stream", allowed=(False,)
        ),
        allow_extended_connect=refused(
            "extended CONNECT (WebSocket over HTTP/3) is not supported", allowed=(False,)
        ),
        allow_metadata=refused("METADATA frames are not supported", allowed=(False,)),
        disable_qpack=refused("QPACK's dynamic table is used as aioquic configures it", allowed=(False,)),
        disable_connection_flow_control_for_streams=refused(
            "connection flow control always applies", allowed=(False,)
        ),
    ),
    "envoy.config.listener.v3.FilterChain": _message(
        "filter_chain_match filters transport_socket transport_socket_connect_timeout name",
        use_proxy_proto=refused("the PROXY protocol is not supported", allowed=(False,)),
        metadata=_METADATA,
    ),
    "envoy.config.core.v3.TransportSocket": _message("name typed_config"),
    "envoy.config.listener.v3.FilterChainMatch": _message(
        "destination_port prefix_ranges source_type source_prefix_ranges source_ports server_names "
        "transport_protocol application_protocols",
        "address_suffix suffix_len direct_source_prefix_ranges",
    ),
    "envoy.config.listener.v3.Filter": _message(
        "typed_config",
        name=accepted("the filter is chosen by its typed_config type"),
        config_discovery=refused("extension config discovery is not supported; give typed_config"),
    ),
    "envoy.config.listener.v3.ListenerFilter": _message(
        "name typed_config",
        config_discovery=refused("extension config discovery is not supported; give typed_config"),
        filter_disabled=refused("conditionally disabled listener filters are not supported"),
    ),
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": _message(
        "codec_type stat_prefix rds route_config http_filters common_http_protocol_options "
        "http2_protocol_options server_name max_request_headers_kb stream_idle_timeout request_timeout "
        "request_headers_timeout drain_timeout access_log use_remote_address generate_request_id "
        "upgrade_configs normalize_path merge_slashes path_with_escaped_slashes_action tracing "
        "local_reply_config",
        "scoped_routes path_normalization_options",
        add_user_agent=refused("meshproxy does not add user-agent or x-envoy-downstream-service-cluster"),
        http1_safe_max_connection_duration=refused("HTTP/1.1 connections end at max_connection_duration"),
        http_protocol_options=refused("HTTP/1.1 codec options are not supported"),
        http3_protocol_options=IMPLEMENTED,
        server_header_transformation=refused("the server header is always overwritten"),
        scheme_header_transformation=refused("the :scheme header is not rewritten"),
        stream_flush_timeout=refused("the flush of a stream is bounded by stream_idle_timeout"),
        delayed_close_timeout=accepted("meshproxy closes a connection once its last bytes are flushed"),
        access_log_flush_interval=refused(_NO_LOG_OPTIONS),
        flush_access_log_on_new_request=refused(_NO_LOG_OPTIONS),
        access_log_options=refused(_NO_LOG_OPTIONS),
        xff_num_trusted_hops=refused("x-forwarded-for hops are not trusted; use use_remote_address"),
        original_ip_detection_extensions=refused("original IP detection extensions are not supported"),
        early_header_mutation_extensions=refused("early header mutation extensions are not supported"),
        internal_address_config=refused("which addresses count as internal is fixed"),
        skip_xff_append=refused("x-forwarded-for is always appended to"),
        via=refused("the via header is not added"),
        preserve_external_request_id=refused("an external x-request-id follows generate_request_id"),
        always_set_request_id_in_response=refused("x-request-id is not echoed in responses"),
        forward_client_cert_details=refused(
            "x-forwarded-client-cert handling is fixed (sanitised)", allowed=("SANITIZE",)
        ),
        set_current_client_cert_details=refused("x-forwarded-client-cert handling is fixed (sanitised)"),
        forward_client_cert_matcher=refused("x-forwarded-client-cert handling is fixed (sanitised)"),
        proxy_100_continue=refused("a 100-continue is not proxied"),
        represent_ipv4_remote_address_as_ipv4_mapped_ipv6=refused("remote addresses are kept as they are"),
        request_id_extension=refused("request ID extensions are not supported"),
        strip_matching_host_port=refused("the port is not stripped from the host header"),
        strip_any_host_port=refused("the port is not stripped from the host header"),
        stream_error_on_invalid_http_message=refused("an invalid HTTP message ends the connection"),
        strip_trailing_host_dot=refused("a trailing dot is not stripped from the host header"),
        proxy_status_config=refused("the proxy-status header is not added"),
        typed_header_validation_config=refused("header validator extensions are not supported"),
        append_x_forwarded_port=refused("x-forwarded-port is not added"),
        append_local_overload=refused("x-envoy-local-overloaded is not added"),
        add_proxy_protocol_connection_state=refused("the PROXY protocol is not supported"),
    ),
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": _message(
        "name typed_config is_optional disabled",
        config_discovery=refused("extension config discovery is not supported; give typed_config"),
    ),
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing": _message(
        "client_sampling random_sampling overall_sampling max_path_tag_length provider",
        verbose=accepted("adds stream-event annotations to spans; meshproxy's spans carry none"),
        custom_tags=refused("custom span tags are not supported (docs/observability.md lists the tags)"),
        spawn_upstream_span=refused(f"{_ONE_SPAN}: no upstream span", allowed=(False,)),
        operation=refused(f"span names are not configurable: {_ONE_SPAN}"),
        upstream_operation=refused(f"span names are not configurable: {_ONE_SPAN}"),
    ),
    "envoy.config.trace.v3.Tracing.Http": _message(
        "typed_config",
        name=accepted("the tracer is chosen by its typed_config type"),
    ),
    "envoy.config.trace.v3.OpenTelemetryConfig": _message(
        "grpc_service service_name max_cache_size",
        http_service=refused("OTLP over HTTP is not supported; use grpc_service"),
        resource_detectors=refused("resource detectors are not supported; the resource holds service.name"),
        sampler=refused("samplers are not supported; use the connection manager's random_sampling"),
    ),
    "envoy.config.core.v3.GrpcService": _message(
        "envoy_grpc timeout",
        google_grpc=refused("use envoy_grpc naming a cluster"),
        initial_metadata=refused("metadata on the exporter's calls is not supported"),
        retry_policy=refused("a failed export is dropped and counted, not retried"),
    ),
    "envoy.config.core.v3.GrpcService.EnvoyGrpc": _message(
        "cluster_name authority",
        retry_policy=refused("a failed export is dropped and counted, not retried"),
        max_receive_message_length=accepted("bounds responses; an ExportTraceServiceResponse is small"),
        skip_envoy_headers=accepted("the exporter's calls carry no x-envoy- headers"),
    ),
    "envoy.extensions.filters.http.router.v3.Router": _message(
        dynamic_stats=accepted("adds Envoy's per-route timing stats"),
        start_child_span=accepted(f"{_ONE_SPAN}: no child span per upstream attempt"),
        upstream_log=refused("upstream access logs are not written; use the connection manager's access_log"),
        upstream_log_options=refused("upstream access logs are not written"),
        suppress_envoy_headers=refused("which x-envoy- headers the router adds is fixed"),
        strict_check_headers=refused("x-envoy- request headers are not checked"),
        respect_expected_rq_timeout=refused("x-envoy-expected-rq-timeout-ms is not read"),
        suppress_grpc_request_failure_code_stats=accepted("stats only"),
        upstream_http_filters=refused("upstream HTTP filters are not supported"),
    ),
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy": _message(
        "stat_prefix cluster weighted_clusters idle_timeout access_log max_connect_attempts",
        on_demand=refused("on-demand cluster discovery is not supported"),
        metadata_match=refused("subset load balancing is not supported"),
        downstream_idle_timeout=refused("use idle_timeout"),
        upstream_idle_timeout=refused("use idle_timeout"),
        backoff_options=refused("a session connects upstream once"),
        hash_policy=refused("tcp_proxy hash policies are not supported"),
        tunneling_config=refused("tunnelling TCP over HTTP is not supported"),
        max_downstream_connection_duration=refused("use idle_timeout"),
        max_downstream_connection_duration_jitter_percentage=refused("use idle_timeout"),
        access_log_flush_interval=refused(_NO_LOG_OPTIONS),
        flush_access_log_on_connected=refused(_NO_LOG_OPTIONS),
        access_log_options=refused(_NO_LOG_OPTIONS),
        proxy_protocol_tlvs=refused("the PROXY protocol is not supported"),
        upstream_connect_mode=refused("the upstream is connected at once"),
        max_early_data_bytes=refused("early data is not buffered"),
    ),
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster": _message("clusters"),
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight": _message(
        "name weight", metadata_match=refused("subset load balancing is not supported")
    ),
    "envoy.config.route.v3.RouteConfiguration": _message(
        "name virtual_hosts request_headers_to_add request_headers_to_remove response_headers_to_add "
        "response_headers_to_remove",
        "vhds",
        internal_only_headers=refused("internal-only headers are not stripped"),
        most_specific_header_mutations_wins=refused("header mutations apply route last (Envoy's default)"),
        validate_clusters=accepted("a static bootstrap's cluster names are always checked"),
        max_direct_response_body_size_bytes=accepted("meshproxy does not cap direct response bodies"),
        cluster_specifier_plugins=refused("cluster specifier plugins are not supported"),
        request_mirror_policies=refused(_NO_MIRROR),
        ignore_port_in_host_matching=refused("the port takes part in host matching"),
        vhost_header=refused("virtual hosts are chosen by the host header"),
        ignore_path_parameters_in_path_matching=refused("path parameters take part in path matching"),
        typed_per_filter_config=IMPLEMENTED,
        metadata=_METADATA,
    ),
    "envoy.config.route.v3.VirtualHost": _message(
        "name domains routes request_headers_to_add request_headers_to_remove response_headers_to_add "
        "response_headers_to_remove retry_policy per_request_buffer_limit_bytes",
        matcher=refused("the matcher API is not supported; use routes"),
        require_tls=refused("require_tls is not supported"),
        virtual_clusters=accepted("names request stats only"),
        rate_limits=refused(_NO_GLOBAL_RATE_LIMIT),
        cors=refused(_NO_CORS),
        typed_per_filter_config=IMPLEMENTED,
        include_request_attempt_count=refused("x-envoy-attempt-count is not added"),
        include_attempt_count_in_response=refused("x-envoy-attempt-count is not added"),
        retry_policy_typed_config=refused("use retry_policy"),
        hedge_policy=refused("request hedging is not supported"),
        include_is_timeout_retry_header=refused("x-envoy-is-timeout-retry is not added"),
        request_body_buffer_limit=refused("use per_request_buffer_limit_bytes"),
        request_mirror_policies=refused(_NO_MIRROR),
        metadata=_METADATA,
    ),
    "envoy.config.route.v3.Route": _message(
        "name match route redirect direct_response request_headers_to_add request_headers_to_remove "
        "response_headers_to_add response_headers_to_remove per_request_buffer_limit_bytes",
        "filter_action non_forwarding_action",
        metadata=_METADATA,
        decorator=accepted(f"names a tracing span; {_ONE_SPAN}"),
        typed_per_filter_config=IMPLEMENTED,
        tracing=refused("per-route sampling is not supported; the connection manager's sampling applies"),
        stat_prefix=_STAT_NAME,
        request_body_buffer_limit=refused("use per_request_buffer_limit_bytes"),
    ),
    "envoy.config.route.v3.RouteMatch": _message(
        "prefix path safe_regex path_separated_prefix case_sensitive headers query_parameters grpc",
        "connect_matcher path_match_policy runtime_fraction tls_context dynamic_metadata filter_state",
    ),
    "envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions": _message(),  # no fields
    "envoy.config.route.v3.RouteAction": _message(
        "cluster weighted_clusters prefix_rewrite regex_rewrite host_rewrite_literal timeout "
        "retry_policy priority hash_policy upgrade_configs max_stream_duration",
        "cluster_header cluster_specifier_plugin inline_cluster_specifier_plugin auto_host_rewrite "
        "host_rewrite_header host_rewrite_path_regex host_rewrite",
        cluster_not_found_response_code=refused("an unknown cluster answers 503"),
        metadata_match=refused("subset load balancing is not supported"),
        path_rewrite_policy=refused("use prefix_rewrite or regex_rewrite"),
        path_rewrite=refused("use prefix_rewrite or regex_rewrite"),
        flush_timeout=refused("use the connection manager's stream_idle_timeout"),
        append_x_forwarded_host=refused("x-forwarded-host is not added"),
        idle_timeout=refused("a per-route idle timeout is not supported; use the connection manager's"),
        early_data_policy=refused("TLS early data is not accepted"),
        retry_policy_typed_config=refused("use retry_policy"),
        request_mirror_policies=IMPLEMENTED,
        rate_limits=refused(_NO_GLOBAL_RATE_LIMIT),
        include_vh_rate_limits=accepted("only with rate_limits, which are refused"),
        cors=refused(_NO_CORS),
        max_grpc_timeout=refused("use max_stream_duration.grpc_timeout_header_max"),
        grpc_timeout_offset=refused("use max_stream_duration"),
        internal_redirect_policy=refused("internal redirects are not followed"),
        internal_redirect_action=refused("internal redirects are not followed"),
        max_internal_redirects=refused("internal redirects are not followed"),
        hedge_policy=refused("request hedging is not supported"),
    ),
    "envoy.config.route.v3.RouteAction.HashPolicy": _message(
        "header cookie connection_properties query_parameter terminal", "filter_state"
    ),
    "envoy.config.route.v3.RouteAction.HashPolicy.Header": _message("header_name", "regex_rewrite"),
    "envoy.config.route.v3.RouteAction.HashPolicy.Cookie": _message(
        "name",
        ttl=refused("the cookie is not generated: a request without it is hashed without it"),
        path=accepted("only for a generated cookie (ttl), which is refused"),
        attributes=accepted("only for a generated cookie (ttl), which is refused"),
    ),
    "envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties": _message("source_ip"),
    "envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter": _message("name"),
    "envoy.config.core.v3.HeaderValueOption": _message(
        "header append append_action",
        keep_empty_value=refused("a header with an empty value is not added", allowed=(False,)),
    ),
    "envoy.config.core.v3.HeaderValue": _message("key value raw_value"),
    "envoy.config.route.v3.RetryPolicy": _message(
        "retry_on num_retries per_try_timeout per_try_idle_timeout retry_host_predicate "
        "host_selection_retry_max_attempts retriable_status_codes retry_back_off",
        "retry_priority retriable_headers retriable_request_headers",
        retry_options_predicates=refused("retry options predicates are not supported"),
        rate_limited_retry_back_off=refused("retry-after and x-ratelimit-reset are not read"),
    ),
    "envoy.config.cluster.v3.Cluster": _message(
        "name type eds_cluster_config connect_timeout per_connection_buffer_limit_bytes lb_policy "
        "load_assignment health_checks max_requests_per_connection circuit_breakers "
        "common_http_protocol_options http2_protocol_options typed_extension_protocol_options "
        "dns_refresh_rate dns_lookup_family outlier_detection cleanup_interval upstream_bind_config "
        "ring_hash_lb_config "
        "maglev_lb_config original_dst_lb_config least_request_lb_config common_lb_config "
        "transport_socket load_balancing_policy",
        "transport_socket_matches cluster_type",
        transport_socket_matcher=refused("give one transport_socket"),
        alt_stat_name=_STAT_NAME,
        upstream_http_protocol_options=refused("auto SNI and SAN validation are not supported; set sni"),
        http_protocol_options=refused("HTTP/1.1 codec options are not supported"),
        dns_jitter=accepted("spreads DNS refreshes in time"),
        dns_failure_refresh_rate=refused("a failed resolution is retried at dns_refresh_rate"),
        respect_dns_ttl=refused("names are re-resolved every dns_refresh_rate"),
        dns_resolvers=refused(f"{_SYSTEM_DNS}; resolvers cannot be set"),
        use_tcp_for_dns_lookups=accepted(f"{_SYSTEM_DNS}, which chooses the transport"),
        dns_resolution_config=refused(f"{_SYSTEM_DNS}; resolvers cannot be set"),
        typed_dns_resolver_config=refused(f"{_SYSTEM_DNS}; resolvers cannot be set"),
        wait_for_warm_on_init=refused("clusters always warm before use", allowed=(True,)),
        lb_subset_config=refused("subset load balancing is not supported"),
        round_robin_lb_config=refused("slow start and locality settings of round robin are not supported"),
        metadata=_METADATA,
        protocol_selection=refused("use typed_extension_protocol_options' use_downstream_protocol_config"),
        upstream_connection_options=IMPLEMENTED,
        close_connections_on_host_health_failure=refused("connections to an unhealthy host are not closed"),
        ignore_health_on_host_removal=refused("a removed host goes at once"),
        filters=refused("upstream network filters are not supported"),
        lrs_server=refused("load reporting is not supported"),
        lrs_report_endpoint_metrics=accepted("load reporting, refused with lrs_server"),
        track_timeout_budgets=accepted("stats only"),
        upstream_config=refused("custom upstream connection pools are not supported"),
        track_cluster_stats=accepted("stats only"),
        preconnect_policy=accepted("speculative connections save latency; requests behave the same"),
        connection_pool_per_downstream_connection=refused("connection pools are shared"),
    ),
    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit": _message(
        "stat_prefix status token_bucket filter_enabled filter_enforced response_headers_to_add",
        "descriptors local_rate_limit_per_downstream_connection local_cluster_rate_limit rate_limits",
        request_headers_to_add_when_not_enforced=refused(
            "no header is added to a request that is not limited"
        ),
        stage=accepted("orders descriptors, which are refused"),
        enable_x_ratelimit_headers=refused("x-ratelimit-* headers are not added"),
        vh_rate_limits=accepted("chooses route rate_limits, which are refused"),
        always_consume_default_token_bucket=accepted("only with descriptors, which are refused"),
        rate_limited_as_resource_exhausted=refused(
            "a limited gRPC request gets UNAVAILABLE (Envoy's default)"
        ),
        max_dynamic_descriptors=accepted("only with descriptors, which are refused"),
    ),
    "envoy.type.v3.HttpStatus": _message("code"),
    # RBAC (compile_rbac.py; docs/authorization.md): every refusal is the compiler's, by path.
    "envoy.extensions.filters.http.rbac.v3.RBAC": _message(
        "rules rules_stat_prefix shadow_rules shadow_rules_stat_prefix",
        "matcher shadow_matcher track_per_rule_stats",
    ),
    "envoy.extensions.filters.http.rbac.v3.RBACPerRoute": _message("rbac"),
    "envoy.extensions.filters.network.rbac.v3.RBAC": _message(
        "rules shadow_rules shadow_rules_stat_prefix stat_prefix",
        "matcher shadow_matcher enforcement_type delay_deny",
    ),
    "envoy.config.rbac.v3.RBAC": _message("action policies", "audit_logging_options"),
    "envoy.config.rbac.v3.Policy": _message(
        "permissions principals", "condition checked_condition cel_config"
    ),
    "envoy.config.rbac.v3.Permission": _message(
        "and_rules or_rules any header url_path destination_ip destination_port destination_port_range"
        " not_rule requested_server_name",
        "metadata matcher uri_template sourced_metadata",
    ),
    "envoy.config.rbac.v3.Permission.Set": _message("rules"),
    "envoy.config.rbac.v3.Principal": _message(
        "and_ids or_ids any authenticated source_ip direct_remote_ip remote_ip header url_path not_id custom",
        "metadata filter_state sourced_metadata",
    ),
    "envoy.config.rbac.v3.Principal.Set": _message("ids"),
    "envoy.config.rbac.v3.Principal.Authenticated": _message("principal_name"),
    "meshproxy.rbac.v1.TlsPrincipal": _message("groups signature_algorithms"),
    "envoy.type.matcher.v3.PathMatcher": _message("path"),
    "envoy.type.v3.Int32Range": _message("start end"),
    "envoy.type.v3.TokenBucket": _message("max_tokens tokens_per_fill fill_interval"),
    "envoy.extensions.filters.http.fault.v3.HTTPFault": _message(
        "delay abort upstream_cluster headers downstream_nodes max_active_faults",
        response_rate_limit=refused("response bandwidth limits are not injected"),
        delay_percent_runtime=accepted(_NO_RUNTIME),
        abort_percent_runtime=accepted(_NO_RUNTIME),
        delay_duration_runtime=accepted(_NO_RUNTIME),
        abort_http_status_runtime=accepted(_NO_RUNTIME),
        max_active_faults_runtime=accepted(_NO_RUNTIME),
        response_rate_limit_percent_runtime=accepted(_NO_RUNTIME),
        abort_grpc_status_runtime=accepted(_NO_RUNTIME),
        disable_downstream_cluster_stats=accepted("meshproxy keeps no per-downstream-cluster fault stats"),
        filter_metadata=accepted("metadata for the access log, which meshproxy writes in its own format"),
    ),
    "envoy.extensions.filters.http.fault.v3.FaultAbort": _message(
        "http_status grpc_status header_abort percentage"
    ),
    "envoy.extensions.filters.http.fault.v3.FaultAbort.HeaderAbort": _message(),
    "envoy.extensions.filters.common.fault.v3.FaultDelay": _message("fixed_delay header_delay percentage"),
    "envoy.extensions.filters.common.fault.v3.FaultDelay.HeaderDelay": _message(),
    "envoy.extensions.filters.http.health_check.v3.HealthCheck": _message(
        "pass_through_mode headers",
        cache_time=refused("only with pass_through_mode, which is refused"),
        cluster_min_healthy_percentages=refused("health checks do not read the clusters' health"),
    ),
    "envoy.extensions.filters.http.cors.v3.Cors": _message(),
    "envoy.extensions.filters.http.cors.v3.CorsPolicy": _message(
        "allow_origin_string_match allow_methods allow_headers expose_headers max_age allow_credentials "
        "filter_enabled shadow_enabled allow_private_network_access",
        forward_not_matching_preflights=refused(
            "a preflight from an origin the policy does not allow is forwarded", allowed=(True,)
        ),
    ),
    f"{_COMPRESSOR}.Compressor": _message(
        "compressor_library response_direction_config",
        content_length=refused(_DEPRECATED_COMPRESSOR),
        content_type=refused(_DEPRECATED_COMPRESSOR),
        disable_on_etag_header=refused(_DEPRECATED_COMPRESSOR),
        remove_accept_encoding_header=refused(_DEPRECATED_COMPRESSOR),
        runtime_enabled=refused(_DEPRECATED_COMPRESSOR),
        request_direction_config=refused("request bodies are not compressed"),
        choose_first=refused("each compressor filter answers its own encoding's q-value"),
    ),
    f"{_COMPRESSOR}.Compressor.ResponseDirectionConfig": _message(
        "common_config disable_on_etag_header remove_accept_encoding_header uncompressible_response_codes",
        status_header_enabled=refused("the x-envoy-compression-status header is not written"),
    ),
    f"{_COMPRESSOR}.Compressor.CommonDirectionConfig": _message("enabled min_content_length content_type"),
    f"{_COMPRESSOR}.CompressorPerRoute": _message(
        "disabled", overrides=refused("per-route compressor overrides are not supported")
    ),
    "envoy.extensions.compression.gzip.compressor.v3.Gzip": _message(
        "memory_level compression_level compression_strategy window_bits",
        chunk_size=_COMPRESSED_AS_PRODUCED,
    ),
    "envoy.extensions.compression.brotli.compressor.v3.Brotli": _message(
        "quality encoder_mode window_bits input_block_bits",
        chunk_size=_COMPRESSED_AS_PRODUCED,
        disable_literal_context_modeling=refused("the brotli binding does not expose it"),
    ),
    "envoy.extensions.compression.zstd.compressor.v3.Zstd": _message(
        "compression_level enable_checksum",
        chunk_size=_COMPRESSED_AS_PRODUCED,
        strategy=refused("zstd's strategy follows its compression_level"),
        dictionary=refused("zstd dictionaries are not supported"),
    ),
    "envoy.extensions.filters.network.http_connection_manager.v3.LocalReplyConfig": _message(
        "mappers body_format"
    ),
    "envoy.extensions.filters.network.http_connection_manager.v3.ResponseMapper": _message(
        "filter status_code body body_format_override headers_to_add"
    ),
    "envoy.config.core.v3.SubstitutionFormatString": _message(
        "text_format json_format text_format_source omit_empty_values content_type",
        "formatters",
        json_format_options=refused("JSON bodies are written with meshproxy's key order"),
    ),
    "envoy.config.route.v3.RouteAction.RequestMirrorPolicy": _message(
        "cluster cluster_header runtime_fraction disable_shadow_host_suffix_append",
        trace_sampled=accepted("the copy carries the request's trace headers as they are"),
        request_headers_mutations=refused(
            "the copy carries the request's headers after the route's mutations"
        ),
        host_rewrite_literal=refused("the copy's host is the request's, with -shadow"),
    ),
    "envoy.config.core.v3.RuntimeFractionalPercent": _message(
        "default_value", runtime_key=accepted(_NO_RUNTIME)
    ),
    "envoy.type.v3.FractionalPercent": _message("numerator denominator"),
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.AutoHttpConfig": _message(
        "http2_protocol_options http3_protocol_options",
        http_protocol_options=refused("auto_config falls back to HTTP/2 over TLS, never to HTTP/1.1"),
        alternate_protocols_cache_options=accepted(
            "meshproxy tries HTTP/3 first on every host and remembers one whose QUIC is blocked;"
            " it reads no Alt-Svc"
        ),
    ),
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _message(
        "common_http_protocol_options explicit_http_config use_downstream_protocol_config auto_config",
        upstream_http_protocol_options=refused("auto SNI and SAN validation are not supported; set sni"),
        http_filters=refused("upstream HTTP filters are not supported"),
        header_validation_config=refused("header validator extensions are not supported"),
        outlier_detection=refused(
            "outlier error matchers are not supported; use the cluster's outlier_detection"
        ),
        request_mirror_policies=refused(_NO_MIRROR),
        hash_policy=refused("use the route's hash_policy"),
        retry_policy=refused("use the route's retry_policy"),
    ),
    "envoy.config.cluster.v3.Cluster.LeastRequestLbConfig": _message(
        "choice_count active_request_bias", slow_start_config=refused(_NO_SLOW_START)
    ),
    "envoy.config.cluster.v3.Cluster.RingHashLbConfig": _message(
        "minimum_ring_size hash_function maximum_ring_size"
    ),
    "envoy.config.cluster.v3.Cluster.MaglevLbConfig": _message("table_size"),
    "envoy.config.cluster.v3.Cluster.CommonLbConfig": _message(
        "healthy_panic_threshold locality_weighted_lb_config",
        zone_aware_lb_config=_ZONE_AWARE,
        update_merge_window=accepted("batches host-set updates; meshproxy applies each one at once"),
        ignore_new_hosts_until_first_hc=refused("a new host takes traffic before its first health check"),
        close_connections_on_host_set_change=refused("connections stay open when the host set changes"),
        consistent_hashing_lb_config=refused(_CONSISTENT_HASHING),
        override_host_status=refused("host overrides are not supported"),
    ),
    "envoy.config.cluster.v3.LoadBalancingPolicy": _message("policies"),
    "envoy.config.cluster.v3.LoadBalancingPolicy.Policy": _message("typed_extension_config"),
    "envoy.config.core.v3.TypedExtensionConfig": _message(
        "typed_config", name=accepted("the extension is chosen by its typed_config type")
    ),
    f"{_LB}.round_robin.v3.RoundRobin": _message(
        "locality_lb_config", slow_start_config=refused(_NO_SLOW_START)
    ),
    f"{_LB}.least_request.v3.LeastRequest": _message(
        "choice_count active_request_bias locality_lb_config",
        slow_start_config=refused(_NO_SLOW_START),
        enable_full_scan=refused("least request always samples choice_count hosts"),
        selection_method=refused("least request always samples choice_count hosts", allowed=("N_CHOICES",)),
    ),
    f"{_LB}.random.v3.Random": _message("locality_lb_config"),
    f"{_LB}.ring_hash.v3.RingHash": _message(
        "hash_function minimum_ring_size maximum_ring_size locality_weighted_lb_config",
        use_hostname_for_hashing=refused(_CONSISTENT_HASHING),
        hash_balance_factor=refused(_CONSISTENT_HASHING),
        consistent_hashing_lb_config=refused(_CONSISTENT_HASHING),
    ),
    f"{_LB}.maglev.v3.Maglev": _message(
        "table_size locality_weighted_lb_config", consistent_hashing_lb_config=refused(_CONSISTENT_HASHING)
    ),
    f"{_LB}.common.v3.LocalityLbConfig": _message(
        "locality_weighted_lb_config", zone_aware_lb_config=_ZONE_AWARE
    ),
    "envoy.config.cluster.v3.Cluster.CommonLbConfig.LocalityWeightedLbConfig": _message(),
    f"{_LB}.common.v3.LocalityLbConfig.LocalityWeightedLbConfig": _message(),
    "envoy.config.core.v3.RuntimeDouble": _message("default_value", runtime_key=accepted(_NO_RUNTIME)),
    "envoy.config.endpoint.v3.ClusterLoadAssignment": _message(
        "endpoints policy",
        cluster_name=accepted(
            "the cluster's own name is used (an EDS resource is matched by its resource name)"
        ),
        named_endpoints=refused("named endpoints are not supported; list them in lb_endpoints"),
    ),
    "envoy.config.endpoint.v3.ClusterLoadAssignment.Policy": _message(
        "overprovisioning_factor",
        "drop_overloads",
        endpoint_stale_after=refused("assignments do not expire"),
        weighted_priority_health=refused("priority health counts hosts, not weights"),
    ),
    "envoy.config.endpoint.v3.LocalityLbEndpoints": _message(
        "locality lb_endpoints load_balancing_weight priority",
        "load_balancer_endpoints leds_cluster_locality_config",
        metadata=_METADATA,
        proximity=refused("locality proximity is not supported"),
    ),
    "envoy.config.endpoint.v3.LbEndpoint": _message(
        "endpoint health_status load_balancing_weight", "endpoint_name", metadata=_METADATA
    ),
    "envoy.config.endpoint.v3.Endpoint": _message(
        "address hostname health_check_config",
        additional_addresses=refused("an endpoint has one address"),
    ),
    "envoy.config.cluster.v3.UpstreamConnectionOptions": _message(
        "tcp_keepalive",
        happy_eyeballs_config=refused("happy eyeballs is not supported"),
        set_local_interface_name_on_upstream_connections=refused("upstream interface names are not recorded"),
    ),
    "envoy.config.core.v3.TcpKeepalive": _message("keepalive_probes keepalive_time keepalive_interval"),
    "envoy.config.endpoint.v3.Endpoint.HealthCheckConfig": _message(
        "port_value",
        address=refused(_OWN_ADDRESS),
        hostname=refused(_OWN_ADDRESS),
        disable_active_health_check=refused("every endpoint of a health-checked cluster is checked"),
    ),
    "envoy.config.core.v3.Locality": _message("region zone sub_zone"),
    "envoy.config.cluster.v3.OutlierDetection": _message(
        "consecutive_5xx interval base_ejection_time max_ejection_percent enforcing_consecutive_5xx "
        "enforcing_success_rate success_rate_minimum_hosts success_rate_request_volume "
        "success_rate_stdev_factor consecutive_gateway_failure enforcing_consecutive_gateway_failure "
        "split_external_local_origin_errors consecutive_local_origin_failure "
        "enforcing_consecutive_local_origin_failure enforcing_local_origin_success_rate "
        "failure_percentage_threshold enforcing_failure_percentage enforcing_failure_percentage_local_origin "
        "failure_percentage_minimum_hosts failure_percentage_request_volume max_ejection_time monitors "
        "always_eject_one_host",
        max_ejection_time_jitter=accepted("spreads the end of ejections in time"),
        successful_active_health_check_uneject_host=refused(
            "a passing health check does not end an ejection", allowed=(False,)
        ),
    ),
    "envoy.config.core.v3.HealthCheck": _message(
        "timeout interval interval_jitter interval_jitter_percent unhealthy_threshold healthy_threshold "
        "http_health_check tcp_health_check grpc_health_check no_traffic_interval",
        "custom_health_check",
        initial_jitter=accepted("delays only the first probe"),
        alt_port=refused("probes go to the endpoint's port"),
        reuse_connection=refused("each probe opens its own connection", allowed=(False,)),
        no_traffic_healthy_interval=refused("use no_traffic_interval"),
        unhealthy_interval=refused("probes run every interval"),
        unhealthy_edge_interval=refused("probes run every interval"),
        healthy_edge_interval=refused("probes run every interval"),
        event_log_path=accepted("health-check event logs are not written; state shows in stats"),
        event_logger=accepted("health-check event logs are not written; state shows in stats"),
        event_service=accepted("health-check events are not streamed; state shows in stats"),
        always_log_health_check_failures=accepted("health-check event logs are not written"),
        always_log_health_check_success=accepted("health-check event logs are not written"),
        tls_options=refused("probes are plain text"),
        transport_socket_match_criteria=refused("probes are plain text"),
    ),
    "envoy.config.core.v3.HealthCheck.HttpHealthCheck": _message(
        "host path expected_statuses codec_client_type",
        send=refused("an HTTP probe is a GET of path"),
        receive=refused("an HTTP probe checks the status only"),
        response_buffer_size=accepted("only with receive, which is refused"),
        request_headers_to_add=refused("an HTTP probe sends no extra headers"),
        request_headers_to_remove=refused("an HTTP probe sends no extra headers"),
        retriable_statuses=refused("use expected_statuses"),
        service_name_matcher=refused("x-envoy-upstream-healthchecked-cluster is not checked"),
        method=refused("an HTTP probe is a GET", allowed=("GET",)),
    ),
    "envoy.config.core.v3.HealthCheck.TcpHealthCheck": _message(
        "send receive", proxy_protocol_config=refused("the PROXY protocol is not supported")
    ),
    "envoy.config.cluster.v3.CircuitBreakers": _message(
        "thresholds", per_host_thresholds=refused("per-host circuit breakers are not supported")
    ),
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds": _message(
        "priority max_connections max_pending_requests max_requests max_retries retry_budget track_remaining",
        max_connection_pools=refused("the number of connection pools is not bounded"),
    ),
    "envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget": _message(
        "budget_percent min_retry_concurrency"
    ),
    f"{_TLS}.CommonTlsContext": _message(
        "tls_params tls_certificates tls_certificate_sds_secret_configs validation_context "
        "validation_context_sds_secret_config combined_validation_context alpn_protocols",
        "tls_certificate_provider_instance custom_tls_certificate_selector "
        "tls_certificate_certificate_provider tls_certificate_certificate_provider_instance "
        "validation_context_certificate_provider "
        "validation_context_certificate_provider_instance custom_handshaker",
        key_log=refused("TLS key logging is not supported"),
    ),
    f"{_TLS}.CommonTlsContext.CombinedCertificateValidationContext": _message(
        "default_validation_context validation_context_sds_secret_config",
        "validation_context_certificate_provider validation_context_certificate_provider_instance",
    ),
    f"{_TLS}.TlsParameters": _message(
        "tls_minimum_protocol_version tls_maximum_protocol_version cipher_suites ecdh_curves "
        "signature_algorithms",
        compliance_policies=refused("compliance policies are not supported; list the algorithms"),
    ),
    f"{_TLS}.TlsCertificate": _message(
        "certificate_chain private_key",
        "pkcs12 watched_directory private_key_provider password",
        ocsp_staple=refused("OCSP stapling is not supported"),
        signed_certificate_timestamp=refused("certificate transparency timestamps are not sent"),
    ),
    f"{_TLS}.CertificateValidationContext": _message(
        "trusted_ca match_typed_subject_alt_names",
        "ca_certificate_provider_instance system_root_certs watched_directory verify_certificate_spki "
        "verify_certificate_hash match_subject_alt_names crl custom_validator_config",
        require_signed_certificate_timestamp=refused("certificate transparency is not checked"),
        allow_expired_certificate=refused("an expired certificate is refused"),
        trust_chain_verification=refused("the chain is always verified", allowed=("VERIFY_TRUST_CHAIN",)),
        only_verify_leaf_cert_crl=accepted("only with crl, which is refused"),
        max_verify_depth=refused("the verification depth is OpenSSL's default"),
    ),
    f"{_TLS}.SubjectAltNameMatcher": _message(
        "san_type matcher", oid=accepted("only with san_type OTHER_NAME, which is refused")
    ),
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext": _message(
        "common_tls_context require_client_certificate",
        require_sni=refused("a handshake without SNI is accepted"),
        session_ticket_keys=refused(_SESSION),
        session_ticket_keys_sds_secret_config=refused(_SESSION),
        disable_stateless_session_resumption=refused(_SESSION),
        disable_stateful_session_resumption=refused(_SESSION),
        session_timeout=refused(_SESSION),
        ocsp_staple_policy=refused("OCSP stapling is not supported"),
        full_scan_certs_on_sni_mismatch=accepted("a listener has one certificate"),
        prefer_client_ciphers=refused("the cipher preference is OpenSSL's default"),
    ),
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": _message(
        "common_tls_context sni",
        auto_host_sni=refused("set sni"),
        auto_sni_san_validation=refused("use validation_context.match_typed_subject_alt_names"),
        allow_renegotiation=refused("TLS renegotiation is not supported"),
        max_session_keys=accepted("the size of the session resumption cache"),
        enforce_rsa_key_usage=refused("the RSA key usage check is OpenSSL's default"),
    ),
    "envoy.config.accesslog.v3.AccessLog": _message(
        "typed_config", "filter", name=accepted("the logger is chosen by its typed_config type")
    ),
    "envoy.extensions.access_loggers.file.v3.FileAccessLog": _message(
        "path",
        format=_LOG_FORMAT,
        json_format=_LOG_FORMAT,
        typed_json_format=_LOG_FORMAT,
        log_format=_LOG_FORMAT,
    ),
    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog": _message(log_format=_LOG_FORMAT),
}

# Messages the compilers read, reached through an implemented field, that are not in TABLE yet:
# their compilers refuse what they cannot run, but their fields are not classified one by one.
# This list may only shrink (tests/unit/config/test_fidelity.py fails on a message reached that
# is in neither, and on an entry here that is classified or no longer reached).
UNCLASSIFIED: frozenset[str] = frozenset(
    {
        "envoy.config.bootstrap.v3.Bootstrap.DynamicResources",
        "envoy.config.cluster.v3.Cluster.EdsClusterConfig",
        "envoy.config.cluster.v3.Cluster.OriginalDstLbConfig",
        "envoy.config.core.v3.Address",
        "envoy.config.core.v3.BindConfig",
        "envoy.config.core.v3.CidrRange",
        "envoy.config.accesslog.v3.AccessLogFilter",
        "envoy.config.core.v3.DataSource",
        "envoy.config.core.v3.HealthCheck.GrpcHealthCheck",
        "envoy.config.core.v3.HealthCheck.Payload",
        "envoy.config.core.v3.Http2ProtocolOptions",
        "envoy.config.core.v3.HttpProtocolOptions",
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig",
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig",
        "envoy.config.core.v3.Node",
        "envoy.config.listener.v3.AdditionalAddress",
        "envoy.config.overload.v3.OverloadManager",
        "envoy.config.overload.v3.ScaleTimersOverloadActionConfig",
        "envoy.config.route.v3.DirectResponseAction",
        "envoy.config.route.v3.FilterConfig",
        "envoy.config.route.v3.HeaderMatcher",
        "envoy.config.route.v3.QueryParameterMatcher",
        "envoy.config.route.v3.RedirectAction",
        "envoy.config.route.v3.RetryPolicy.RetryBackOff",
        "envoy.config.route.v3.RetryPolicy.RetryHostPredicate",
        "envoy.config.route.v3.RouteAction.MaxStreamDuration",
        "envoy.config.route.v3.RouteAction.UpgradeConfig",
        "envoy.config.route.v3.WeightedCluster",
        "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
        "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
        "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig",
        "envoy.extensions.filters.network.http_connection_manager.v3.Rds",
        "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
        "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
        "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
        "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
        "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig",
        "envoy.extensions.transport_sockets.tls.v3.Secret",
        "envoy.type.matcher.v3.RegexMatchAndSubstitute",
        "envoy.type.matcher.v3.RegexMatcher",
        "envoy.type.matcher.v3.StringMatcher",
        "envoy.type.v3.Int64Range",
        "envoy.type.v3.Percent",
        "udpa.type.v1.TypedStruct",
        "xds.type.v3.TypedStruct",
    }
)

# What the compilers walk as they compile it (each calls refuse_unsupported): resources, which
# also arrive alone over xDS, and a route or endpoint, so that the compilers' steps (one per
# route, one per endpoint) stay short inside a table of thousands. A walk from a parent stops here.
UNITS = frozenset(
    {
        "envoy.config.listener.v3.Listener",
        "envoy.config.cluster.v3.Cluster",
        "envoy.config.route.v3.RouteConfiguration",
        "envoy.config.route.v3.Route",
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        "envoy.config.endpoint.v3.LbEndpoint",
    }
)

_ANY = "google.protobuf.Any"
_WRAPPERS = frozenset(
    f"google.protobuf.{kind}Value"
    for kind in ("Bool", "Int32", "UInt32", "Int64", "UInt64", "Float", "Double", "String", "Bytes")
)


def refuse_unsupported(msg: Message, ctx: Ctx) -> None:
    """One problem per field the table refuses that ``msg``, or a message below it, sets to
    something other than its default or an allowed value."""
    _walk(msg, ctx, (), root=True)


# The path below the walk's root, built into a Ctx only when there is a problem to report.
_Trail = tuple[tuple[str, int | str | None], ...]
# What the walk does with a set field: report it, or walk into one message, each of a list, or
# each value of a map. Fields with nothing to check below them are left out of a plan.
_REFUSE, _ONE, _EACH, _MAP = range(4)
_Plan = dict[str, tuple[int, Field]]


def _walk(msg: Message, ctx: Ctx, trail: _Trail, *, root: bool = False) -> None:
    if type(msg) is AnyProto:
        inner = _unpacked(msg)
        if inner is not None:
            _walk(inner, ctx, trail)
        return
    plan = _plan(msg.DESCRIPTOR.full_name, root)
    if not plan:
        return
    for field, value in msg.ListFields():
        step = plan.get(field.name)
        if step is None:
            continue
        kind, entry = step
        if kind == _REFUSE:
            if _meaningful(field, value, entry.allowed):
                here = ctx
                for name, index in (*trail, (field.name, None)):
                    here = here.at(name, index)
                here.problem(f"is not supported: {entry.reason}")
        elif kind == _ONE:
            _walk(value, ctx, (*trail, (field.name, None)))
        elif kind == _EACH:
            for index, item in enumerate(value):
                _walk(item, ctx, (*trail, (field.name, index)))
        else:
            for key, item in value.items():
                _walk(item, ctx, (*trail, (field.name, str(key))))


# Message types whose plan is being made: a recursive message (RBAC's Permission holds a
# Permission) is walked into without asking for its plan again.
_PLANNING: set[str] = set()


@functools.cache
def _plan(name: str, root: bool) -> _Plan:
    """The walk's plan for one message type; empty for a type the table does not classify, and
    for a unit below the root (it is walked when it is compiled)."""
    row = TABLE.get(name)
    if row is None or (not root and name in UNITS):
        return {}
    _PLANNING.add(name)
    try:
        return _fields_plan(name, row)
    finally:
        _PLANNING.discard(name)


def _fields_plan(name: str, row: dict[str, Field]) -> _Plan:
    plan: _Plan = {}
    for field in _descriptor(name).fields:
        entry = row.get(field.name)
        if entry is None:  # a field this protobuf has and the table lacks: the unit test says so
            continue
        if entry.support is Support.REFUSED and not entry.by_compiler:
            plan[field.name] = (_REFUSE, entry)
        elif entry.support is Support.IMPLEMENTED and field.message_type is not None:
            target = field.message_type
            is_map = target.GetOptions().map_entry
            if is_map:
                target = target.fields_by_name["value"].message_type
            # An Any may hold anything; another message only what its own plan checks.
            walk = target is not None and (
                target.full_name in (_ANY, *_PLANNING) or bool(_plan(target.full_name, False))
            )
            if walk:
                plan[field.name] = (_MAP if is_map else _EACH if field.is_repeated else _ONE, entry)
    return plan


def _meaningful(field: FieldDescriptor, value: Any, allowed: tuple[str | int | bool, ...]) -> bool:
    """Whether a set field says something: an empty message (``{}``) says nothing, unless its
    type has no fields (its presence is what it says: ``internal_listener: {}``); a wrapper
    (``BoolValue``) is meaningful even when it holds its zero; an enum compares by name."""
    if field.message_type is not None and not field.is_repeated:
        if field.message_type.full_name in _WRAPPERS:
            return value.value not in allowed
        return bool(value.ByteSize()) or not field.message_type.fields
    if field.enum_type is not None and not field.is_repeated:
        known = field.enum_type.values_by_number.get(value)
        return (known.name if known else value) not in allowed
    return field.is_repeated or value not in allowed


def _unpacked(packed: Any) -> Message | None:
    name = packed.type_url.rsplit("/", 1)[-1]
    if name not in TABLE:
        return None
    message = message_factory.GetMessageClass(_descriptor(name))()
    return message if packed.Unpack(message) else None


def _descriptor(name: str) -> Descriptor:
    return descriptor_pool.Default().FindMessageTypeByName(name)


def markdown() -> str:
    """docs/configuration.md's section listing, per message, each field meshproxy refuses or
    accepts without effect (tests/unit/config/test_configuration_doc.py keeps the two equal):
    ``python -m meshproxy.config.fidelity`` prints it."""
    lines = []
    for name, row in TABLE.items():
        entries = [(field, entry) for field, entry in row.items() if entry.support is not Support.IMPLEMENTED]
        if not entries:
            continue
        lines += ["", f"**{name.rsplit('.', 1)[-1]}** (`{name}`)", "", "| Field | |", "|---|---|"]
        for field, entry in entries:
            lines.append(f"| `{field}` | {_describe(entry)} |")
    unclassified = ", ".join(f"`{name}`" for name in sorted(UNCLASSIFIED))
    lines += [
        "",
        "Not classified field by field yet (their compilers refuse what they cannot run, as the "
        f"sections above describe): {unclassified}.",
    ]
    return "\n".join(lines[1:]) + "\n"


def _describe(entry: Field) -> str:
    if entry.support is Support.ACCEPTED:
        return f"accepted: {entry.reason}"
    if entry.by_compiler:
        return "refused (see the table above)"
    if entry.allowed:
        values = ", ".join(f"`{str(v).lower() if isinstance(v, bool) else v}`" for v in entry.allowed)
        return f"refused unless {values}: {entry.reason}"
    return f"refused: {entry.reason}"


if __name__ == "__main__":
    print(markdown(), end="")
