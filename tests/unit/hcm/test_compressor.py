"""The compressor filter without sockets (hcm/compressor.py): accept-encoding parsing, the
encode hook's header rules (etag, no-transform, an existing content-encoding, vary merged,
uncompressible statuses), the encoder streaming output before the body ends, and the chain's
encode hooks skipped for local replies and body-less responses.
"""

from __future__ import annotations

import os
import zlib

import pytest
from test_exchange import T0, context
from test_filters import Stream

from meshproxy.config.filter_config import CompressionLibrary, CompressorFilter
from meshproxy.hcm.compressor import accept_encoding, compressor
from meshproxy.hcm.context import LocalReply
from meshproxy.hcm.exchange import Exchange
from meshproxy.hcm.filters import FilterChain
from meshproxy.hcm.headers import edit_response, reply_headers

GZIP = CompressionLibrary("text", "gzip", "gzip", level=6, window_bits=12)


def accepted(config: CompressorFilter | None = None) -> Exchange:
    """An exchange whose request said ``accept-encoding: gzip`` to the filter's request hook."""
    ctx = context()
    hooks = compressor(config or CompressorFilter(GZIP), "compress", ctx, T0)
    ctx.filters = FilterChain([hooks])
    x = Exchange(ctx, T0)
    assert x.match(b"svc", b"/", []) is None
    stream = Stream()
    stream.headers = [(b"accept-encoding", b"gzip")]
    assert hooks.request is not None and hooks.request(stream, x, T0) is None  # type: ignore[arg-type]
    return x


def test_accept_encoding_q_values() -> None:
    assert accept_encoding(b"gzip, br;q=0.5, *;q=0") == {b"gzip": 1.0, b"br": 0.5, b"*": 0.0}
    assert accept_encoding(b"GZIP;Q=0.3, gzip;q=0.7") == {b"gzip": 0.7}
    for bad in (b"gzip;q=2", b"gzip;q=x", b"gzip;level=1", b"gzip;q=nan"):
        assert accept_encoding(bad) is None, bad


@pytest.mark.parametrize(
    ("headers", "compressed"),
    [
        ([(b"content-type", b"text/html; charset=utf-8")], True),
        ([(b"content-type", b"image/png")], False),
        ([(b"content-encoding", b"br")], False),
        ([(b"cache-control", b"public, no-transform")], False),
        ([(b"content-length", b"29")], False),
        ([(b"content-length", b"30")], True),
    ],
)
def test_the_response_headers_decide(headers: list[tuple[bytes, bytes]], compressed: bool) -> None:
    x = accepted()
    edited = list(headers)
    encoder = edit_response(x, 200, edited, (), True)
    assert (encoder is not None) == compressed
    if compressed:
        assert (b"content-encoding", b"gzip") in edited and (b"vary", b"accept-encoding") in edited
        assert not any(n == b"content-length" for n, _ in edited)
    else:
        assert edited == headers


def test_etags_vary_and_uncompressible_statuses() -> None:
    x = accepted()
    headers = [(b"etag", b'"v1"'), (b"vary", b"origin")]
    assert edit_response(x, 200, headers, (), True) is not None
    assert (b"etag", b'W/"v1"') in headers and (b"vary", b"origin, accept-encoding") in headers
    x = accepted(CompressorFilter(GZIP, disable_on_etag=True, uncompressible_codes=frozenset({206})))
    assert edit_response(x, 200, [(b"etag", b'"v1"')], (), True) is None
    assert edit_response(x, 206, [], (), True) is None
    stats = x.ctx.store.compressor_stats("http.http.compressor.text.gzip")
    assert (stats.not_compressed_etag, stats.not_compressed) == (1, 2)


def test_no_encoder_without_a_body_nor_for_local_replies() -> None:
    x = accepted()
    headers: list[tuple[bytes, bytes]] = []
    assert edit_response(x, 200, headers, (), False) is None and headers == []
    assert reply_headers(x, LocalReply(503, b"no healthy upstream", "UH")) is None


def test_the_encoder_streams_and_bounds_what_it_holds() -> None:
    x = accepted()
    encoder = edit_response(x, 200, [], (), True)
    assert encoder is not None
    body = os.urandom(1 << 20)  # incompressible: the output keeps pace with the input
    out = [encoder.data(body[i : i + 16384]) for i in range(0, len(body), 16384)]
    held = len(body) - sum(map(len, out))
    assert held < 64 * 1024  # what the compressor holds is its window, not the body
    out.append(encoder.end())
    assert zlib.decompress(b"".join(out), 16 + zlib.MAX_WBITS) == body
