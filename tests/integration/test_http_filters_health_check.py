"""envoy.filters.http.health_check (pass_through_mode false) over real sockets, through both
codecs: a matching request is answered 200 by the proxy (the upstream never sees it), others go
on; the admin's POST /healthcheck/fail turns the answer to 503 (with
x-envoy-immediate-health-check-fail) until /healthcheck/ok; a draining listener answers 503.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .harness import http_listener, route
from .serving import serving

CODECS = ("HTTP/1.1", "HTTP/2")
HEALTH_CHECK = "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck"


def health_listener() -> dict[str, Any]:
    listener = http_listener([route()])
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    config = {
        "@type": HEALTH_CHECK,
        "pass_through_mode": False,
        "headers": [{"name": ":path", "string_match": {"exact": "/healthz"}}],
    }
    manager["http_filters"].insert(0, {"name": "envoy.filters.http.health_check", "typed_config": config})
    return listener


@pytest.mark.parametrize("codec", CODECS)
async def test_health_checks_are_answered_by_the_proxy_and_follow_the_admin(codec: str) -> None:
    async with serving(health_listener(), codec) as (proxy, c), httpx.AsyncClient() as admin:
        healthy = await c.get(proxy.url("/healthz"))
        other = await c.get(proxy.url("/echo"))
        assert proxy.cluster_stats().upstream_rq_total == 1  # only /echo reached the upstream
        assert (await admin.post(proxy.admin_url + "/healthcheck/fail")).status_code == 200
        failed = await c.get(proxy.url("/healthz"))
        still = await c.get(proxy.url("/echo"))
        assert (await admin.post(proxy.admin_url + "/healthcheck/ok")).status_code == 200
        again = await c.get(proxy.url("/healthz"))
        assert (await admin.get(proxy.admin_url + "/healthcheck/fail")).status_code == 405
    assert (healthy.status_code, healthy.content) == (200, b"")
    assert other.status_code == 200 and other.json()["path"] == "/echo"
    assert failed.status_code == 503
    assert failed.headers["x-envoy-immediate-health-check-fail"] == "true"
    assert still.status_code == 200
    assert again.status_code == 200


async def test_a_draining_listener_fails_its_health_checks() -> None:
    async with serving(health_listener()) as (proxy, c):
        assert (await c.get(proxy.url("/healthz"))).status_code == 200
        listener = proxy.server.listeners["http"]
        listener.graceful = listener.draining = True  # a graceful drain's first phase: still accepting
        answer = await c.get(proxy.url("/healthz"))
    assert answer.status_code == 503
