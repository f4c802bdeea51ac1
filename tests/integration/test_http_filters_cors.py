"""envoy.filters.http.cors over real sockets, through both codecs: a preflight from an allowed
origin answered by the proxy, an actual request's response annotated, a disallowed origin left
alone (its preflight forwarded), shadow mode counting only, and a route's policy replacing its
virtual host's.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .harness import http_listener, route
from .serving import serving

CODECS = ("HTTP/1.1", "HTTP/2")
CORS = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
POLICY = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
APP = {
    "@type": POLICY,
    "allow_origin_string_match": [{"exact": "https://app.example"}, {"suffix": ".trusted.example"}],
    "allow_methods": "GET, PUT",
    "allow_headers": "x-token",
    "expose_headers": "x-served-by",
    "max_age": "600",
    "allow_credentials": True,
}


def cors_listener(vhost_policy: dict[str, Any], routes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    vhost = {"name": "all", "domains": ["*"], "routes": routes or [route()]}
    vhost["typed_per_filter_config"] = {"cors": vhost_policy}
    listener = http_listener(virtual_hosts=[vhost])
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"].insert(0, {"name": "cors", "typed_config": {"@type": CORS}})
    return listener


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


@pytest.mark.parametrize("codec", CODECS)
async def test_preflight_and_actual_requests_from_an_allowed_origin(codec: str) -> None:
    preflight = {"origin": "https://app.example", "access-control-request-method": "PUT"}
    async with serving(cors_listener(APP), codec) as (proxy, c):
        answered = await c.options(proxy.url("/echo"), headers=preflight)
        assert proxy.cluster_stats().upstream_rq_total == 0  # the proxy answered it
        actual = await c.get(proxy.url("/echo"), headers={"origin": "https://x.trusted.example"})
        assert proxy.http_stats().cors_origin_valid == 2
    assert answered.status_code == 200
    assert cors_headers(answered) == {
        "access-control-allow-origin": "https://app.example",
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, PUT",
        "access-control-allow-headers": "x-token",
        "access-control-max-age": "600",
    }
    assert actual.status_code == 200 and actual.json()["path"] == "/echo"
    assert cors_headers(actual) == {
        "access-control-allow-origin": "https://x.trusted.example",
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-served-by",
    }


@pytest.mark.parametrize("codec", CODECS)
async def test_a_disallowed_origin_gets_no_cors_headers_and_its_preflight_is_forwarded(codec: str) -> None:
    preflight = {"origin": "https://evil.example", "access-control-request-method": "PUT"}
    async with serving(cors_listener(APP), codec) as (proxy, c):
        forwarded = await c.options(proxy.url("/echo"), headers=preflight)
        plain = await c.get(proxy.url("/echo"), headers={"origin": "https://evil.example"})
        no_origin = await c.get(proxy.url("/echo"))
        stats = proxy.http_stats()
        assert (stats.cors_origin_valid, stats.cors_origin_invalid) == (0, 2)
    assert forwarded.json()["method"] == "OPTIONS"  # the upstream answered it
    assert cors_headers(forwarded) == cors_headers(plain) == cors_headers(no_origin) == {}


async def test_shadow_mode_counts_without_answering() -> None:
    shadow = APP | {
        "filter_enabled": {"default_value": {"numerator": 0}},
        "shadow_enabled": {"default_value": {"numerator": 100}},
    }
    async with serving(cors_listener(shadow), "HTTP/1.1") as (proxy, c):
        response = await c.get(proxy.url("/echo"), headers={"origin": "https://app.example"})
        assert proxy.http_stats().cors_origin_valid == 1
    assert cors_headers(response) == {}


async def test_a_routes_policy_replaces_its_virtual_hosts() -> None:
    other = {"@type": POLICY, "allow_origin_string_match": [{"exact": "https://other.example"}]}
    routes = [route("/other") | {"typed_per_filter_config": {"cors": other}}, route()]
    async with serving(cors_listener(APP, routes), "HTTP/1.1") as (proxy, c):
        on_route = await c.get(proxy.url("/other"), headers={"origin": "https://other.example"})
        app_there = await c.get(proxy.url("/other"), headers={"origin": "https://app.example"})
        on_vhost = await c.get(proxy.url("/echo"), headers={"origin": "https://app.example"})
    assert on_route.headers["access-control-allow-origin"] == "https://other.example"
    assert "access-control-allow-origin" not in app_there.headers
    assert on_vhost.headers["access-control-allow-origin"] == "https://app.example"
