"""envoy.filters.http.fault over real sockets, through both codecs (httpx over HTTP/1.1, and
over HTTP/2 with prior knowledge): fixed and header-controlled delays (the request and its body
reach the upstream after the delay), aborts (the upstream never sees the request), the
per-route override, max_active_faults, a gRPC abort, the stats and the access log's DI / FI.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from .h2_client import RawH2
from .harness import eventually, http_listener, read_access_log, route
from .serving import client, serving

CODECS = ("HTTP/1.1", "HTTP/2")
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ALL = {"numerator": 100}


def fault_listener(
    config: dict[str, Any], routes: list[dict[str, Any]] | None = None, **hcm: Any
) -> dict[str, Any]:
    listener = http_listener(routes or [route()], **hcm)
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"].insert(0, {"name": "fault", "typed_config": {"@type": FAULT, **config}})
    return listener


@pytest.mark.parametrize("codec", CODECS)
async def test_a_fixed_delay_holds_the_request_and_its_body_then_forwards_them(
    codec: str, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    config = {"delay": {"fixed_delay": "0.2s", "percentage": ALL}}
    async with serving(fault_listener(config, access_log=str(log)), codec) as (proxy, c):
        start = time.monotonic()
        response = await c.post(proxy.url("/echo"), content=b"x" * 50_000)
        elapsed = time.monotonic() - start
        stats = proxy.http_stats()
        assert (stats.fault_delays_injected, stats.fault_aborts_injected) == (1, 0)
        assert stats.fault_active_faults == 0
    assert response.status_code == 200
    assert response.json()["body_len"] == 50_000
    assert elapsed >= 0.2
    assert [line["response_flags"] for line in read_access_log(log)] == ["DI"]


@pytest.mark.parametrize("codec", CODECS)
async def test_an_abort_answers_without_the_upstream(codec: str, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    config = {"abort": {"http_status": 503, "percentage": ALL}}
    async with serving(fault_listener(config, access_log=str(log)), codec) as (proxy, c):
        response = await c.get(proxy.url("/echo"))
        assert proxy.http_stats().fault_aborts_injected == 1
        assert proxy.cluster_stats().upstream_rq_total == 0
    assert (response.status_code, response.content) == (503, b"fault filter abort")
    assert [line["response_flags"] for line in read_access_log(log)] == ["FI"]


@pytest.mark.parametrize("codec", CODECS)
async def test_header_controlled_faults_follow_the_request_headers(codec: str) -> None:
    config = {
        "abort": {"header_abort": {}, "percentage": ALL},
        "delay": {"header_delay": {}, "percentage": ALL},
    }
    async with serving(fault_listener(config), codec) as (proxy, c):
        plain = await c.get(proxy.url("/echo"))
        aborted = await c.get(proxy.url("/echo"), headers={"x-envoy-fault-abort-request": "429"})
        never = await c.get(
            proxy.url("/echo"),
            headers={"x-envoy-fault-abort-request": "429", "x-envoy-fault-abort-request-percentage": "0"},
        )
        start = time.monotonic()
        delayed = await c.get(proxy.url("/echo"), headers={"x-envoy-fault-delay-request": "150"})
        elapsed = time.monotonic() - start
        stats = proxy.http_stats()
        assert (stats.fault_delays_injected, stats.fault_aborts_injected) == (1, 1)
    assert [r.status_code for r in (plain, aborted, never, delayed)] == [200, 429, 200, 200]
    assert elapsed >= 0.15


@pytest.mark.parametrize("codec", CODECS)
async def test_a_routes_typed_per_filter_config_replaces_the_filters(codec: str) -> None:
    teapot = {"@type": FAULT, "abort": {"http_status": 418, "percentage": ALL}}
    routes = [route("/teapot") | {"typed_per_filter_config": {"fault": teapot}}, route()]
    async with serving(fault_listener({}, routes), codec) as (proxy, c):
        codes = [(await c.get(proxy.url(path))).status_code for path in ("/teapot", "/other")]
    assert codes == [418, 200]


async def test_max_active_faults_lets_requests_past_the_limit_through_untouched() -> None:
    config = {"delay": {"fixed_delay": "0.5s", "percentage": ALL}, "max_active_faults": 1}
    async with serving(fault_listener(config)) as (proxy, held), client("HTTP/1.1") as free:
        slow = asyncio.create_task(held.get(proxy.url("/echo")))
        stats = proxy.http_stats()
        await eventually(lambda: stats.fault_active_faults == 1, what="the first request held")
        start = time.monotonic()
        fast = await free.get(proxy.url("/echo"))
        assert time.monotonic() - start < 0.5 and not slow.done()
        assert (stats.fault_faults_overflow, stats.fault_active_faults) == (1, 1)
        assert (await slow).status_code == 200
        assert (stats.fault_delays_injected, stats.fault_active_faults) == (1, 0)
    assert fast.status_code == 200


async def test_a_grpc_abort_is_a_trailers_only_grpc_status() -> None:
    config = {"abort": {"grpc_status": 14, "percentage": ALL}}
    async with serving(fault_listener(config)) as (proxy, _):
        h2 = await RawH2.open(proxy.port())
        try:
            sid = h2.request("/pkg.Svc/Call", extra=[("content-type", "application/grpc")])
            await h2.flush()
            await h2.read_until(lambda _e: h2.ended(sid))
            headers = h2.headers_of(sid)
        finally:
            await h2.close()
    assert (headers[b":status"], headers[b"grpc-status"], headers[b"grpc-message"]) == (
        b"200",
        b"14",
        b"fault filter abort",
    )
