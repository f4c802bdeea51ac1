"""The envoy.filters.http.compressor filter's runtime: response bodies compressed as they stream.

Owns Envoy's CompressorFilter rules for the response direction, sans-I/O. The request hook
reads ``accept-encoding`` (q-values: the library's token, else ``*``; ``identity`` listed with
a higher q wins; q=0 refuses) and may remove it (remove_accept_encoding_header); a route's
CompressorPerRoute ``disabled`` turns the filter off there. The encode hook (rule 4b of
``hcm/filters.py``) compresses an upstream response that carries a body unless its status is
uncompressible, it already has a content-encoding, cache-control says no-transform, its
content-type is not listed, its content-length is under min_content_length (a response without
one is compressed: it streams), or it has an etag and disable_on_etag_header is set (a strong
etag otherwise becomes weak). Compressing removes content-length, sets content-encoding and adds
``vary: accept-encoding``. The body goes through the library's streaming compressor (gzip from
zlib, brotli, zstd): memory per stream is the compressor's window, never the body. Local
replies are not compressed (a departure from Envoy: they are short). Stats as Envoy's
``http.<stat_prefix>.compressor.<library name>.<gzip|brotli|zstd>.*``. Must not import
asyncio, sockets or either codec package.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import brotli
import zstandard

from meshproxy.hcm.filters import Hooks, route_config

if TYPE_CHECKING:
    from meshproxy.config.filter_config import CompressionLibrary, CompressorFilter, CompressorPerRoute
    from meshproxy.hcm.context import HttpContext
    from meshproxy.hcm.exchange import Exchange
    from meshproxy.hcm.filters import FilterStream
    from meshproxy.stats import CompressorStats

ACCEPT_ENCODING = b"accept-encoding"
_VARY = b"vary"


class Encoder:
    """One response's streaming compressor (a ``BodyEncoder``), counting bytes in and out."""

    __slots__ = ("compress", "finish", "stats")

    def __init__(self, library: CompressionLibrary, stats: CompressorStats) -> None:
        self.stats = stats
        self.compress: Callable[[bytes], bytes]
        self.finish: Callable[[], bytes]
        if library.encoding == "gzip":
            z = zlib.compressobj(
                library.level, zlib.DEFLATED, 16 + library.window_bits, library.memory_level, library.strategy
            )
            self.compress, self.finish = z.compress, z.flush
        elif library.encoding == "br":
            b = brotli.Compressor(
                mode=library.strategy,
                quality=library.level,
                lgwin=library.window_bits,
                lgblock=library.block_bits,
            )
            self.compress, self.finish = b.process, b.finish
        else:
            zs = zstandard.ZstdCompressor(level=library.level, write_checksum=library.checksum).compressobj()
            self.compress, self.finish = zs.compress, zs.flush

    def data(self, chunk: bytes) -> bytes:
        out = self.compress(chunk)
        stats = self.stats
        stats.total_uncompressed_bytes += len(chunk)
        stats.total_compressed_bytes += len(out)
        return out

    def end(self) -> bytes:
        out = self.finish()
        self.stats.total_compressed_bytes += len(out)
        return out


class Compressor:
    __slots__ = ("config", "name", "stats", "token")

    def __init__(self, config: CompressorFilter, name: str, ctx: HttpContext) -> None:
        self.config = config
        self.name = name
        library = config.library
        self.token = library.encoding.encode()
        prefix = f"http.{ctx.config.stat_prefix}.compressor.{library.name}.{library.stats_prefix}"
        self.stats = ctx.store.compressor_stats(prefix)

    def request(self, stream: FilterStream, x: Exchange, now: float) -> None:
        per_route: CompressorPerRoute | None = route_config(x, self.name)
        if per_route is not None and per_route.disabled:
            return None
        headers = stream.headers
        accept = b",".join(v for n, v in headers if n == ACCEPT_ENCODING)
        config = self.config
        if config.remove_accept_encoding and accept:
            headers[:] = [h for h in headers if h[0] != ACCEPT_ENCODING]
        if self._accepted(accept):
            state = x.filter_state
            if state is None:
                state = x.filter_state = {}
            state[self.name] = True
        return None

    def _accepted(self, accept: bytes) -> bool:
        """Whether the client takes this library's encoding (counted as Envoy counts it)."""
        stats = self.stats
        if not accept.strip():
            stats.no_accept_header += 1
            return False
        qs = accept_encoding(accept)
        if qs is None:
            stats.header_not_valid += 1
            return False
        wildcard = self.token not in qs
        q = qs.get(b"*", 0.0) if wildcard else qs[self.token]
        if q <= 0.0 or q < qs.get(b"identity", 0.0):
            stats.header_identity += 1
            return False
        if wildcard:
            stats.header_wildcard += 1
        else:
            stats.header_compressor_used += 1
        return True

    def encode(self, x: Exchange, status: int, headers: list[tuple[bytes, bytes]]) -> Encoder | None:
        state = x.filter_state
        if state is None or self.name not in state:
            return None
        config, stats = self.config, self.stats
        if not config.enabled or not self._compressible(status, headers):
            stats.not_compressed += 1
            return None
        stats.compressed += 1
        vary = [v for n, v in headers if n == _VARY]
        headers[:] = [h for h in headers if h[0] != b"content-length" and h[0] != _VARY]
        headers.append((b"content-encoding", self.token))
        if not any(t.strip().lower() in (b"accept-encoding", b"*") for v in vary for t in v.split(b",")):
            vary.append(b"accept-encoding")
        headers.append((_VARY, b", ".join(vary)))
        return Encoder(config.library, stats)

    def _compressible(self, status: int, headers: list[tuple[bytes, bytes]]) -> bool:
        config, stats = self.config, self.stats
        if status in config.uncompressible_codes:
            return False
        etag_at = -1
        for i, (name, value) in enumerate(headers):
            if name == b"content-encoding" and value.strip().lower() != b"identity":
                return False
            if name == b"cache-control" and b"no-transform" in value.lower():
                return False
            if name == b"content-type":
                media = value.split(b";", 1)[0].strip().lower().decode("latin-1")
                if media not in config.content_types:
                    return False
            elif name == b"content-length":
                if not value.isdigit() or int(value) < config.min_content_length:
                    stats.content_length_too_small += 1
                    return False
            elif name == b"etag":
                etag_at = i
        if etag_at >= 0:
            if config.disable_on_etag:
                stats.not_compressed_etag += 1
                return False
            etag = headers[etag_at][1]
            if not etag.startswith(b"W/"):  # the compressed body is not byte-identical
                headers[etag_at] = (b"etag", b"W/" + etag)
        return True


def accept_encoding(value: bytes) -> dict[bytes, float] | None:
    """``accept-encoding``'s codings by q-value (lowercased); None when a q-value is malformed."""
    qs: dict[bytes, float] = {}
    for item in value.split(b","):
        coding, _, params = item.partition(b";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        params = params.strip()
        if params:
            key, _, number = params.partition(b"=")
            if key.strip().lower() != b"q":
                return None
            try:
                q = float(number)
            except ValueError:
                return None
            if not 0.0 <= q <= 1.0:
                return None
        qs[coding] = max(q, qs.get(coding, 0.0))
    return qs


def compressor(config: CompressorFilter, name: str, ctx: HttpContext, now: float) -> Hooks:
    """The factory (``hcm/chain.py``)."""
    f = Compressor(config, name, ctx)
    return Hooks(name, request=f.request, encode=f.encode)
