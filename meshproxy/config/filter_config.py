"""The compiled configs of the HTTP filters meshproxy runs beyond the local rate limit (frozen).

Owns the shape of each filter's typed_config (and per-route config) as its runtime in ``hcm/``
reads it: ``Fault`` (envoy.filters.http.fault), ``HealthCheckFilter``
(envoy.filters.http.health_check), ``CorsFilter`` and ``CorsPolicy`` (envoy.filters.http.cors),
``CompressorFilter`` and ``CompressorPerRoute`` (envoy.filters.http.compressor).
``compile_filters.py``'s registry says which proto compiles to which. Must not import asyncio,
sockets or generated protobuf code.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshproxy.config.model import HeaderMatcher, StringMatch


@dataclass(frozen=True, slots=True)
class Percent:
    """A FractionalPercent: ``numerator`` in ``denominator`` (100, 10 000 or 1 000 000)."""

    numerator: int
    denominator: int = 100


@dataclass(frozen=True, slots=True)
class FaultDelay:
    """fixed_delay (seconds), or the x-envoy-fault-delay-request header's milliseconds."""

    percent: Percent
    fixed: float = 0.0
    from_header: bool = False


@dataclass(frozen=True, slots=True)
class FaultAbort:
    """http_status, grpc_status (None: not a gRPC abort), or the x-envoy-fault-abort-* headers."""

    percent: Percent
    http_status: int = 0
    grpc_status: int | None = None
    from_header: bool = False


@dataclass(frozen=True, slots=True)
class Fault:
    """envoy.extensions.filters.http.fault.v3.HTTPFault, as a filter's or a route's config."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    upstream_cluster: str = ""  # "": every route; else only routes to this cluster
    headers: tuple[HeaderMatcher, ...] = ()  # all must match
    downstream_nodes: tuple[str, ...] = ()  # x-envoy-downstream-service-node must be one
    max_active_faults: int | None = None  # None: no limit


@dataclass(frozen=True, slots=True)
class HealthCheckFilter:
    """envoy.extensions.filters.http.health_check.v3.HealthCheck with pass_through_mode false."""

    headers: tuple[HeaderMatcher, ...] = ()  # all must match for a request to be a health check


@dataclass(frozen=True, slots=True)
class CorsFilter:
    """envoy.extensions.filters.http.cors.v3.Cors: the filter itself (its policies are per route)."""


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """envoy.extensions.filters.http.cors.v3.CorsPolicy, a route's or virtual host's."""

    allow_origins: tuple[StringMatch, ...] = ()  # one must match the Origin (or "*")
    allow_methods: str = ""
    allow_headers: str = ""
    expose_headers: str = ""
    max_age: str = ""
    allow_credentials: bool = False
    allow_private_network_access: bool = False
    enabled: Percent = Percent(100)  # filter_enabled (absent: every request)
    shadow: Percent = Percent(0)  # shadow_enabled: evaluated and counted only


@dataclass(frozen=True, slots=True)
class CompressionLibrary:
    """A compressor_library: ``encoding`` (gzip, br or zstd, the content-encoding it writes and
    the accept-encoding token it answers), its stats prefix (gzip, brotli, zstd) and settings."""

    name: str  # the TypedExtensionConfig's name (a stats scope)
    encoding: str
    stats_prefix: str
    level: int  # gzip: zlib's 1-9 (-1 default); brotli: quality 0-11; zstd: level
    window_bits: int = 0  # gzip 9-15, brotli 10-24; 0 for zstd
    memory_level: int = 5  # gzip only
    strategy: int = 0  # gzip: zlib's Z_* strategy; brotli: its mode
    block_bits: int = 0  # brotli's input_block_bits (0: for zstd and gzip)
    checksum: bool = False  # zstd only


# Envoy's default compressible content types (response_direction_config.common_config).
DEFAULT_CONTENT_TYPES = (
    "text/html", "text/plain", "text/css", "application/javascript", "application/x-javascript",
    "text/javascript", "text/x-javascript", "text/ecmascript", "text/js", "text/jscript",
    "text/x-js", "application/ecmascript", "application/x-json", "application/xml",
    "application/json", "image/svg+xml", "text/xml", "application/xhtml+xml",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CompressorFilter:
    """envoy.extensions.filters.http.compressor.v3.Compressor, the response direction."""

    library: CompressionLibrary
    enabled: bool = True  # common_config.enabled's default_value
    min_content_length: int = 30
    content_types: frozenset[str] = frozenset(DEFAULT_CONTENT_TYPES)
    disable_on_etag: bool = False
    remove_accept_encoding: bool = False
    uncompressible_codes: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class CompressorPerRoute:
    """envoy.extensions.filters.http.compressor.v3.CompressorPerRoute: ``disabled`` only."""

    disabled: bool
