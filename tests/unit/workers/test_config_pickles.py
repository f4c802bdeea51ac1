"""Compiled configurations reach worker processes pickled: everything in one must survive that.

Regex matchers and SAN matchers are closures over RE2 programs; they are compiled again where
they are unpickled. A config that did not pickle kept ``--concurrency`` from starting.
"""

from __future__ import annotations

import json
import pickle

from sans import san_matchers

from meshproxy.config.bootstrap import parse_bootstrap

ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def test_a_config_with_regex_routes_pickles_and_still_matches() -> None:
    route = {"match": {"safe_regex": {"regex": "/api/v[0-9]+/.*"}}, "direct_response": {"status": 204}}
    manager = {
        "@type": HCM,
        "stat_prefix": "h",
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [route]}]},
        "http_filters": [{"name": "router", "typed_config": {"@type": ROUTER}}],
    }
    listener = {
        "name": "h",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": manager}]}],
    }
    config = parse_bootstrap(json.dumps({"static_resources": {"listeners": [listener]}}))
    copy = pickle.loads(pickle.dumps(config))
    assert copy == config
    [vhost] = copy.listeners[0].filter_chains[0].filter.route_config.virtual_hosts
    pattern = vhost.routes[0].match.pattern
    assert pattern is not None
    assert pattern.fullmatch(b"/api/v2/x") and not pattern.fullmatch(b"/api/vx/x")


def test_san_matchers_pickle_and_still_match() -> None:
    matchers = san_matchers(
        ("safe_regex", {"regex": "spiffe://td/ns/[a-z]+/sa/web"}), ("exact", "spiffe://td/x")
    )
    copies = pickle.loads(pickle.dumps(matchers))
    assert copies == matchers
    assert copies[0].test(b"spiffe://td/ns/prod/sa/web") and not copies[0].test(b"spiffe://td/ns/1/sa/web")
    assert copies[1].test(b"spiffe://td/x")
