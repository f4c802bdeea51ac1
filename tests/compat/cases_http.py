"""Corpus checks for plain-HTTP shapes: routing, header manipulation, redirects and direct
responses, traffic splitting, access logs, rate limits, retries and timeouts, priorities and
health checks, WebSocket.

Each check starts the proxy on its rewritten file and asserts over real sockets what the file
asks for. Upstreams: ``svc1``..``svc3`` are echo services that name themselves (the JSON body's
``server``); ``dead`` is a port nobody listens on.
"""

from __future__ import annotations

import json
import random

import aiohttp
from integration.harness import eventually, read_access_log

from .corpus import Env, accepted
from .tls import request


async def served_by(port: int, path: str = "/", **kwargs: object) -> str:
    resp = await request(port, path, **kwargs)  # type: ignore[arg-type]
    assert resp.status == 200, (resp.status, resp.body)
    return str(json.loads(resp.body)["server"])


def echoed_headers(body: bytes) -> dict[str, str]:
    return {name: value for name, value in json.loads(body)["headers"]}


@accepted(
    "local-ratelimit",
    "two requests pass, the third is answered 429 with x-local-rate-limit: true",
    service="svc1",
)
async def local_ratelimit(env: Env) -> None:
    async with env.proxy():
        statuses = [(await request(env.port())) for _ in range(3)]
    assert [r.status for r in statuses] == [200, 200, 429]
    assert statuses[2].get("x-local-rate-limit") == "true"
    assert statuses[0].get("x-local-rate-limit") is None


@accepted(
    "locality-priority",
    "the priority-0 locality fails its health checks; traffic fails over to priority 1 only",
    backend_local_1="dead",
    backend_local_2="svc2",
    backend_remote_1="svc3",
)
async def locality_priority(env: Env) -> None:
    async with env.proxy() as proxy:
        stats = proxy.cluster_stats("backend")
        await eventually(lambda: stats.health_check_failure >= 1, what="the dead endpoint failed its check")
        served = [await served_by(env.port("backend")) for _ in range(6)]
    assert served == ["svc2"] * 6


@accepted(
    "health-checks",
    "the endpoint failing /healthz leaves rotation; every request reaches the healthy one",
    **{"10__0__0__1": "dead", "10__0__0__2": "svc1"},
)
async def health_checks(env: Env) -> None:
    async with env.proxy() as proxy:
        stats = proxy.cluster_stats("app")
        await eventually(lambda: stats.health_check_failure >= 1, what="the dead endpoint failed its check")
        served = [await served_by(env.port("ingress")) for _ in range(6)]
    assert served == ["svc1"] * 6


@accepted(
    "retries-timeouts",
    "requests retried past a refusing endpoint all succeed (retries counted); a slow answer is 504 "
    "at the route timeout",
    broken="dead",
    healthy="svc1",
)
async def retries_timeouts(env: Env) -> None:
    async with env.proxy() as proxy:
        served = [await served_by(env.port("ingress"), "/retry") for _ in range(6)]
        slow = await request(env.port("ingress"), "/delay/3")
        retries = proxy.cluster_stats("flaky").upstream_rq_retry
    assert served == ["svc1"] * 6
    assert retries >= 1
    assert slow.status == 504


@accepted(
    "header-manipulation",
    "the upstream sees the rewritten path and host, the added headers, not the removed one; "
    "the client sees the added response headers, not the removed one",
    api="svc1",
)
async def header_manipulation(env: Env) -> None:
    async with env.proxy():
        resp = await request(env.port("ingress"), "/api/items?x=1", headers=[("x-internal-secret", "s")])
    assert resp.status == 200
    seen = json.loads(resp.body)
    headers = echoed_headers(resp.body)
    assert seen["path"] == "/v2/items?x=1"
    assert headers["host"] == "api.internal"
    assert (headers["x-vhost"], headers["x-route"], headers["x-discount"]) == ("app", "api", "10%")
    assert "x-internal-secret" not in headers
    assert (resp.get("x-route-config"), resp.get("cache-control")) == ("on", "no-store")
    assert resp.get("x-served-by") is None


@accepted(
    "redirects",
    "an old host answers 308 to the new one, a moved path 301 to its new path, the rest 301 to https",
)
async def redirects(env: Env) -> None:
    async with env.proxy():
        old = await request(env.port("http"), "/a?b=c", host="old.example.com")
        moved = await request(env.port("http"), "/old-page", host="www.example.com")
        https = await request(env.port("http"), "/shop", host="www.example.com")
    assert (old.status, old.get("location")) == (308, "http://new.example.com/a?b=c")
    assert (moved.status, moved.get("location")) == (301, "http://www.example.com/new-page")
    assert (https.status, https.get("location")) == (301, "https://www.example.com/shop")


@accepted("direct-response", "200 ok, 503 with its body and retry-after, 404 for the rest, no upstream")
async def direct_response(env: Env) -> None:
    async with env.proxy():
        ok = await request(env.port("edge"), "/healthz")
        down = await request(env.port("edge"), "/maintenance/x")
        missing = await request(env.port("edge"), "/anything")
    assert (ok.status, ok.body) == (200, b"ok\n")
    assert (down.status, down.body, down.get("retry-after")) == (503, b"down for maintenance\n", "120")
    assert missing.status == 404


@accepted(
    "weighted-canary",
    "the header-matched route always reaches v2; the 90/10 split sends most requests to v1 and some to v2",
    app_v1="svc1",
    app_v2="svc2",
)
async def weighted_canary(env: Env) -> None:
    async with env.proxy(rng=random.Random(7)):
        pinned = {await served_by(env.port("ingress"), headers=[("x-canary", "always")]) for _ in range(3)}
        split = [await served_by(env.port("ingress")) for _ in range(40)]
    assert pinned == {"svc2"}
    assert split.count("svc1") > 28
    assert split.count("svc2") >= 1


@accepted(
    "access-log-json",
    "each request is one JSON line in the file the log names, with its method, path, status and "
    "upstream; the lines have meshproxy's own field names (log_format is on the documented list of "
    "fields accepted without effect)",
    app="svc1",
)
async def access_log_json(env: Env) -> None:
    async with env.proxy():
        await request(env.port("ingress"), "/logged")
    (entry,) = read_access_log(env.tmp / "access.log")
    assert (entry["method"], entry["path"], entry["response_code"]) == ("GET", "/logged", 200)
    assert entry["upstream_host"] == f"127.0.0.1:{env.ports['svc1']}"


async def _websocket(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{port}/ws", timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws,
    ):
        await ws.send_str("hello")
        msg = await ws.receive(timeout=5)
    return str(msg.data)


@accepted("websocket", "a WebSocket upgrade is relayed and frames echo both ways", service_ws="svc1")
async def websocket(env: Env) -> None:
    async with env.proxy():
        assert await _websocket(env.port()) == "svc1:hello"


@accepted(
    "websocket-route", "the upgrade enabled on the route is relayed; frames echo both ways", service_ws="svc2"
)
async def websocket_route(env: Env) -> None:
    async with env.proxy():
        assert await _websocket(env.port()) == "svc2:hello"


@accepted(
    "tcp-proxy-weighted",
    "TCP sessions are split between the two clusters by weight (both reached over ten sessions)",
    blue="svc1",
    green="svc2",
)
async def tcp_proxy_weighted(env: Env) -> None:
    async with env.proxy(rng=random.Random(3)):
        served = {await served_by(env.port("tcp_ingress")) for _ in range(10)}
    assert served == {"svc1", "svc2"}
