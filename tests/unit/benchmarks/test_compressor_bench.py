"""The compressor benchmark measures what it says: its bootstrap compiles with the gzip
compressor before the router, and the benchmark upstream's response is one it compresses."""

from __future__ import annotations

import json

import yaml

from benchmarks import compressor_cost, upstream
from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.config.filter_config import CompressorFilter
from meshproxy.config.model import HttpConnectionManager


def test_compressor_cost_bootstrap_runs_gzip_on_the_upstreams_response() -> None:
    doc = yaml.safe_load(compressor_cost.gzip_bootstrap(1, 2, 3))
    config = parse_bootstrap(json.dumps(doc), source="bench")
    manager = config.listeners[0].filter_chains[0].filter
    assert isinstance(manager, HttpConnectionManager)
    [gzip] = [f.config for f in manager.http_filters]
    assert isinstance(gzip, CompressorFilter) and gzip.library.encoding == "gzip"
    assert b"Content-Type: text/plain" in upstream.RESPONSE and "text/plain" in gzip.content_types
    assert len(upstream.BODY) >= gzip.min_content_length
