"""Compiles envoy.filters.http.compressor (Compressor, CompressorPerRoute) and its libraries.

Owns Envoy's rules for the response direction as meshproxy runs it: the compressor_library is
gzip (zlib), brotli or zstd, each with Envoy's defaults (gzip: level 6, window_bits 12,
memory_level 5; brotli: quality 3, window_bits 18, input_block_bits 24; zstd: level 3);
common_config's enabled (its default_value; the runtime key is accepted without effect: no
runtime layer), min_content_length (30) and content_type (Envoy's list when empty);
disable_on_etag_header, remove_accept_encoding_header, uncompressible_response_codes. What is
refused (the request direction, the deprecated top-level fields, per-route overrides) is
refused by ``fidelity.py`` with its path. Must not depend on the listener or route compilers;
``compile_filters`` calls it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from envoy.extensions.compression.brotli.compressor.v3 import brotli_pb2
from envoy.extensions.compression.gzip.compressor.v3 import gzip_pb2
from envoy.extensions.compression.zstd.compressor.v3 import zstd_pb2
from envoy.extensions.filters.http.compressor.v3 import compressor_pb2

from meshproxy.config.compile_common import Ctx, type_url, unpack, wrapped
from meshproxy.config.filter_config import (
    DEFAULT_CONTENT_TYPES,
    CompressionLibrary,
    CompressorFilter,
    CompressorPerRoute,
)

COMPRESSOR_NAME = "envoy.filters.http.compressor"

_GZIP_STRATEGIES = {
    "DEFAULT_STRATEGY": zlib.Z_DEFAULT_STRATEGY,
    "FILTERED": zlib.Z_FILTERED,
    "HUFFMAN_ONLY": zlib.Z_HUFFMAN_ONLY,
    "RLE": zlib.Z_RLE,
    "FIXED": zlib.Z_FIXED,
}
_BROTLI_MODES = {"DEFAULT": 0, "GENERIC": 0, "TEXT": 1, "FONT": 2}  # brotli.MODE_*


def _in_range(value: int, low: int, high: int, ctx: Ctx) -> int:
    if not low <= value <= high:
        ctx.problem(f"must be between {low} and {high} (got {value})")
    return value


def _gzip(msg: gzip_pb2.Gzip, name: str, ctx: Ctx) -> CompressionLibrary:
    level = msg.compression_level  # DEFAULT_COMPRESSION (0) is zlib's -1; the others are 1-9
    return CompressionLibrary(
        name,
        "gzip",
        "gzip",
        level=level or zlib.Z_DEFAULT_COMPRESSION,
        window_bits=_in_range(wrapped(msg, "window_bits", 12), 9, 15, ctx.at("window_bits")),
        memory_level=_in_range(wrapped(msg, "memory_level", 5), 1, 9, ctx.at("memory_level")),
        strategy=_GZIP_STRATEGIES[gzip_pb2.Gzip.CompressionStrategy.Name(msg.compression_strategy)],
    )


def _brotli(msg: brotli_pb2.Brotli, name: str, ctx: Ctx) -> CompressionLibrary:
    return CompressionLibrary(
        name,
        "br",
        "brotli",
        level=_in_range(wrapped(msg, "quality", 3), 0, 11, ctx.at("quality")),
        window_bits=_in_range(wrapped(msg, "window_bits", 18), 10, 24, ctx.at("window_bits")),
        strategy=_BROTLI_MODES[brotli_pb2.Brotli.EncoderMode.Name(msg.encoder_mode)],
        block_bits=_in_range(wrapped(msg, "input_block_bits", 24), 16, 24, ctx.at("input_block_bits")),
    )


def _zstd(msg: zstd_pb2.Zstd, name: str, ctx: Ctx) -> CompressionLibrary:
    return CompressionLibrary(
        name,
        "zstd",
        "zstd",
        level=_in_range(wrapped(msg, "compression_level", 3), 1, 22, ctx.at("compression_level")),
        checksum=msg.enable_checksum,
    )


_LIBRARIES: dict[str, tuple[Any, Callable[[Any, str, Ctx], CompressionLibrary]]] = {
    type_url(gzip_pb2.Gzip): (gzip_pb2.Gzip, _gzip),
    type_url(brotli_pb2.Brotli): (brotli_pb2.Brotli, _brotli),
    type_url(zstd_pb2.Zstd): (zstd_pb2.Zstd, _zstd),
}


def compressor(msg: compressor_pb2.Compressor, ctx: Ctx) -> CompressorFilter | None:
    mark = ctx.mark()
    c = ctx.at("compressor_library")
    entry = _LIBRARIES.get(msg.compressor_library.typed_config.type_url)
    library = None
    if entry is None:
        url = msg.compressor_library.typed_config.type_url or "nothing"
        c.at("typed_config").problem(
            f"{url} is not supported; meshproxy compresses with envoy.compression.gzip.compressor, "
            "brotli.compressor or zstd.compressor"
        )
    else:
        message, build = entry
        library = build(unpack(msg.compressor_library.typed_config, message), msg.compressor_library.name,
                        c.at("typed_config"))  # fmt: skip
    response = msg.response_direction_config
    common = response.common_config
    r = ctx.at("response_direction_config")
    codes = []
    for code, cc in r.each("uncompressible_response_codes", response.uncompressible_response_codes):
        codes.append(_in_range(code, 200, 599, cc))
    if not ctx.clean_since(mark) or library is None:
        return None
    return CompressorFilter(
        library,
        enabled=wrapped(common.enabled, "default_value", True),
        min_content_length=wrapped(common, "min_content_length", 30),
        content_types=frozenset(common.content_type or DEFAULT_CONTENT_TYPES),
        disable_on_etag=response.disable_on_etag_header,
        remove_accept_encoding=response.remove_accept_encoding_header,
        uncompressible_codes=frozenset(codes),
    )


def compressor_per_route(msg: compressor_pb2.CompressorPerRoute, ctx: Ctx) -> CompressorPerRoute:
    return CompressorPerRoute(disabled=msg.disabled)
