"""SAN matchers for tests, built by the compiler as a bootstrap's would be."""

from __future__ import annotations

from envoy.extensions.transport_sockets.tls.v3 import common_pb2
from google.protobuf import json_format

from meshproxy.config.compile_common import Ctx
from meshproxy.config.compile_tls import san_matcher
from meshproxy.tls.config import SanMatcher


def san_matchers(*pairs: tuple[str, str], san_type: str = "URI") -> tuple[SanMatcher, ...]:
    """One matcher per (StringMatcher kind, value) pair, e.g. ``("exact", "spiffe://td/x")``."""
    matchers = []
    for kind, value in pairs:
        msg = json_format.ParseDict(
            {"san_type": san_type, "matcher": {kind: value}}, common_pb2.SubjectAltNameMatcher()
        )
        problems: list[str] = []
        matcher = san_matcher(msg, Ctx("san", problems))
        assert matcher is not None, problems
        matchers.append(matcher)
    return tuple(matchers)
