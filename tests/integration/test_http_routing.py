"""Routing end to end: a real client, the proxy's router, real upstreams.

Covers virtual-host selection by Host (exact, ``*.suffix``, ``prefix*``, ``*``, case and
port), route matches (prefix, path, safe_regex, path_separated_prefix, header and query
matchers), weighted clusters (the split and the per-cluster headers), path and host rewrites,
request/response header mutations at route, virtual-host and route-configuration level,
direct responses, redirects, and a STRICT_DNS cluster resolving ``localhost``.

Each route tags the request it forwards (``request_headers_to_add``) so the echo upstream
reports which route or virtual host matched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

from .harness import Proxy, bootstrap, cluster, http_listener, running_proxy
from .upstreams import aiohttp_upstream


def _header(key: str, value: str, action: str = "APPEND_IF_EXISTS_OR_ADD") -> dict[str, Any]:
    return {"header": {"key": key, "value": value}, "append_action": action}


def _tagged(match: dict[str, Any], tag: str, **action: Any) -> dict[str, Any]:
    return {
        "match": match,
        "route": {"cluster": "backend", **action},
        "request_headers_to_add": [_header("x-matched", tag)],
    }


def _vhost(name: str, domains: list[str], routes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "domains": domains, "routes": routes, **extra}


@contextlib.asynccontextmanager
async def _routed(
    virtual_hosts: list[dict[str, Any]], *clusters: dict[str, Any], **route_config: Any
) -> AsyncIterator[tuple[Proxy, httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack:
        if not clusters:
            clusters = (cluster("backend", await stack.enter_async_context(aiohttp_upstream())),)
        listener = http_listener(virtual_hosts=virtual_hosts)
        listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"].update(route_config)
        proxy = await stack.enter_async_context(running_proxy(bootstrap([listener], list(clusters))))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=proxy.url(), timeout=10))
        yield proxy, client


async def _matched(client: httpx.AsyncClient, path: str, host: str = "test", **headers: str) -> str | None:
    resp = await client.get(path, headers={"host": host, **headers})
    if resp.status_code != 200:
        return f"status {resp.status_code}"
    tags = [v for n, v in resp.json()["headers"] if n == "x-matched"]
    return tags[0] if tags else None


async def test_virtual_host_selection_by_domain() -> None:
    vhosts = [
        _vhost(
            tag,
            domains,
            [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}],
            request_headers_to_add=[_header("x-matched", tag)],
        )
        for tag, domains in [
            ("exact", ["api.example.com"]),
            ("suffix", ["*.example.com"]),
            ("prefix", ["api.*"]),
            ("any", ["*"]),
        ]
    ]
    cases = {
        "api.example.com": "exact",
        "API.Example.COM": "exact",  # case-insensitive
        "www.example.com": "suffix",
        "www.example.com:8080": "suffix",  # no domain matches with the port: tried again without
        "api.example.com:8080": "prefix",  # as sent, "api.*" matches first (Envoy keeps the port)
        "a.b.example.com": "suffix",
        "api.other.org": "prefix",
        "other.org": "any",
        "example.com": "any",  # "*.example.com" needs at least one character before the dot
    }
    async with _routed(vhosts) as (_, client):
        got = {host: await _matched(client, "/", host) for host in cases}
    assert got == cases


async def test_route_match_kinds() -> None:
    routes = [
        _tagged({"path": "/exact"}, "path"),
        _tagged({"safe_regex": {"regex": "/re/[0-9]+"}}, "regex"),
        _tagged({"path_separated_prefix": "/sep"}, "separated"),
        _tagged(
            {"prefix": "/h", "headers": [{"name": "x-variant", "string_match": {"exact": "blue"}}]}, "hdr"
        ),
        _tagged({"prefix": "/h", "headers": [{"name": "x-beta", "present_match": True}]}, "hdr-present"),
        _tagged(
            {
                "prefix": "/h",
                "headers": [{"name": "x-variant", "string_match": {"prefix": "gr"}, "invert_match": True}],
            },
            "hdr-invert",
        ),
        _tagged(
            {"prefix": "/q", "query_parameters": [{"name": "debug", "string_match": {"exact": "1"}}]}, "query"
        ),
        _tagged(
            {"prefix": "/q", "query_parameters": [{"name": "trace", "present_match": True}]}, "query-present"
        ),
        _tagged({"prefix": "/g", "grpc": {}}, "grpc"),
        _tagged({"prefix": "/"}, "fallback"),
    ]
    cases: list[tuple[str, dict[str, str], str]] = [
        ("/exact", {}, "path"),
        ("/exact/more", {}, "fallback"),
        ("/exact?x=1", {}, "path"),
        ("/re/123", {}, "regex"),
        ("/re/12a", {}, "fallback"),  # safe_regex matches the whole path
        ("/sep", {}, "separated"),
        ("/sep/x/y", {}, "separated"),
        ("/separate", {}, "fallback"),
        ("/h", {"x-variant": "blue"}, "hdr"),
        ("/h", {"x-beta": ""}, "hdr-present"),
        ("/h", {"x-variant": "green"}, "fallback"),
        ("/h", {"x-variant": "purple"}, "hdr-invert"),
        ("/q?debug=1", {}, "query"),
        ("/q?debug=0", {}, "fallback"),
        ("/q?a=b&trace", {}, "query-present"),
        # grpc: {} matches gRPC's content-types only (Envoy's hasGrpcContentType).
        ("/g", {"content-type": "application/grpc"}, "grpc"),
        ("/g", {"content-type": "application/grpc+proto"}, "grpc"),
        ("/g", {"content-type": "application/grpc;charset=utf-8"}, "grpc"),
        ("/g", {"content-type": "application/grpc-web"}, "fallback"),
        ("/g", {"content-type": "application/json"}, "fallback"),
        ("/g", {}, "fallback"),
    ]
    async with _routed([_vhost("all", ["*"], routes)]) as (_, client):
        got = [(path, hdrs, await _matched(client, path, **hdrs)) for path, hdrs, _ in cases]
    assert got == cases


async def test_weighted_clusters_split_traffic() -> None:
    total, workers = 2000, 8
    weighted = {
        "clusters": [
            {"name": "a", "weight": 25, "request_headers_to_add": [_header("x-weighted", "a")]},
            {"name": "b", "weight": 75, "request_headers_to_add": [_header("x-weighted", "b")]},
        ]
    }
    routes = [{"match": {"prefix": "/"}, "route": {"weighted_clusters": weighted}}]
    served: Counter[str] = Counter()
    mislabelled = 0

    async def worker(session: aiohttp.ClientSession, url: str) -> None:
        nonlocal mislabelled
        for _ in range(total // workers):
            async with session.get(url) as resp:
                body = await resp.json()
            served[body["server"]] += 1
            mislabelled += [v for k, v in body["headers"] if k == "x-weighted"] != [body["server"]]

    async with aiohttp_upstream("a") as port_a, aiohttp_upstream("b") as port_b:
        doc = bootstrap([http_listener(routes)], [cluster("a", port_a), cluster("b", port_b)])
        async with running_proxy(doc) as proxy, aiohttp.ClientSession() as session:
            await asyncio.gather(*(worker(session, proxy.url("/echo")) for _ in range(workers)))
    assert served["a"] + served["b"] == total
    # 25 % of 2000 is 500, sigma about 19: 90 is more than four sigma either way.
    assert abs(served["a"] - 500) < 90, served
    assert mislabelled == 0, "a weighted cluster's headers went to the other cluster"


async def test_path_and_host_rewrites() -> None:
    routes = [
        _tagged({"prefix": "/api/"}, "prefix", prefix_rewrite="/v2/"),
        _tagged(
            {"prefix": "/users/"},
            "regex",
            regex_rewrite={"pattern": {"regex": "^/users/([0-9]+)/profile$"}, "substitution": "/u/\\1/p"},
        ),
        _tagged({"prefix": "/hr"}, "host", host_rewrite_literal="backend.internal"),
    ]
    async with _routed([_vhost("all", ["*"], routes)]) as (_, client):
        prefix = (await client.get("/api/echo?x=1")).json()
        regex = (await client.get("/users/42/profile?y=2")).json()
        host = (await client.get("/hr/echo", headers={"host": "public.example"})).json()
    assert prefix["path"] == "/v2/echo?x=1"
    assert regex["path"] == "/u/42/p?y=2"
    assert dict(host["headers"])["host"] == "backend.internal"
    assert host["path"] == "/hr/echo"


async def test_header_mutations_at_every_level() -> None:
    route = {
        "match": {"prefix": "/"},
        "route": {"cluster": "backend"},
        "request_headers_to_add": [
            _header("x-level", "route"),
            _header("x-from-route", "1"),
            _header("x-over", "route", "OVERWRITE_IF_EXISTS_OR_ADD"),
            _header("x-absent", "route", "ADD_IF_ABSENT"),
        ],
        "request_headers_to_remove": ["x-drop-route"],
        "response_headers_to_add": [_header("x-resp-route", "1")],
    }
    vhost = _vhost(
        "all",
        ["*"],
        [route],
        request_headers_to_add=[_header("x-level", "vhost"), _header("x-from-vhost", "1")],
        request_headers_to_remove=["x-drop-vhost"],
        response_headers_to_add=[_header("x-resp-vhost", "1")],
    )
    config_level = {
        "request_headers_to_add": [_header("x-level", "config"), _header("x-from-config", "1")],
        "response_headers_to_add": [_header("x-resp-config", "1")],
        "response_headers_to_remove": ["x-served-by"],
    }
    sent = {"x-drop-route": "1", "x-drop-vhost": "1", "x-over": "client", "x-absent": "client"}
    async with _routed([vhost], **config_level) as (_, client):
        resp = await client.get("/echo", headers=sent)
    seen: dict[str, list[str]] = {}
    for name, value in resp.json()["headers"]:
        seen.setdefault(name, []).append(value)
    assert seen["x-level"] == ["route", "vhost", "config"]  # most specific first
    assert all(seen[f"x-from-{lvl}"] == ["1"] for lvl in ("route", "vhost", "config"))
    assert seen["x-over"] == ["route"]
    assert seen["x-absent"] == ["client"]
    assert "x-drop-route" not in seen and "x-drop-vhost" not in seen
    assert all(resp.headers.get(f"x-resp-{lvl}") == "1" for lvl in ("route", "vhost", "config"))
    assert "x-served-by" not in resp.headers


async def test_direct_response_and_redirects() -> None:
    routes = [
        {
            "match": {"path": "/teapot"},
            "direct_response": {"status": 418, "body": {"inline_string": "short and stout"}},
            "response_headers_to_add": [_header("x-direct", "yes")],
        },
        {
            "match": {"path": "/old"},
            "redirect": {"path_redirect": "/new", "response_code": "PERMANENT_REDIRECT"},
        },
        {"match": {"prefix": "/secure"}, "redirect": {"https_redirect": True}},
        {
            "match": {"prefix": "/moved/"},
            "redirect": {"host_redirect": "new.example.com", "prefix_rewrite": "/here/"},
        },
    ]
    async with _routed([_vhost("all", ["*"], routes)]) as (proxy, client):
        teapot = await client.get("/teapot")
        head = await client.head("/teapot")
        old = await client.get("/old?keep=1", headers={"host": "svc.local:8080"})
        secure = await client.get("/secure/x?q=1", headers={"host": "svc.local"})
        moved = await client.get("/moved/a?b=c", headers={"host": "svc.local"})
        assert proxy.cluster_stats().upstream_rq_total == 0  # nothing reached an upstream
    assert (teapot.status_code, teapot.text, teapot.headers["x-direct"]) == (418, "short and stout", "yes")
    assert (head.status_code, head.content, head.headers["content-length"]) == (418, b"", "15")
    assert (old.status_code, old.headers["location"]) == (308, "http://svc.local:8080/new?keep=1")
    assert (secure.status_code, secure.headers["location"]) == (301, "https://svc.local/secure/x?q=1")
    assert (moved.status_code, moved.headers["location"]) == (301, "http://new.example.com/here/a?b=c")


async def test_strict_dns_cluster_resolves_localhost() -> None:
    async with aiohttp_upstream("dns") as up:
        dns_cluster = cluster("backend", up, host="localhost", kind="STRICT_DNS", dns_refresh_rate="0.2s")
        async with running_proxy(
            bootstrap([http_listener([_tagged({"prefix": "/"}, "dns")])], [dns_cluster])
        ) as proxy:
            async with httpx.AsyncClient() as client:
                bodies = [(await client.get(proxy.url(f"/echo/{i}"))).json() for i in range(5)]
            stats = proxy.cluster_stats()
            assert {b["server"] for b in bodies} == {"dns"}
            assert stats.membership_total == 1  # localhost is 127.0.0.1 here
            assert stats.update_success >= 1


async def test_logical_dns_cluster_resolves_its_one_name_and_honours_the_lookup_family() -> None:
    # localhost is 127.0.0.1 only on the test machines (no ::1 line in /etc/hosts): V4_ONLY
    # serves; V6_ONLY finds no address, so the cluster has no host and says so (503 UH).
    async with aiohttp_upstream("logical") as up:
        v4 = cluster("backend", up, host="localhost", kind="LOGICAL_DNS", dns_refresh_rate="0.2s")
        v4["dns_lookup_family"] = "V4_ONLY"
        async with running_proxy(
            bootstrap([http_listener([_tagged({"prefix": "/"}, "dns")])], [v4])
        ) as proxy:
            async with httpx.AsyncClient() as client:
                bodies = [(await client.get(proxy.url(f"/echo/{i}"))).json() for i in range(3)]
            stats = proxy.cluster_stats()
            assert {b["server"] for b in bodies} == {"logical"}
            assert stats.membership_total == 1
        v6 = dict(v4, dns_lookup_family="V6_ONLY")
        async with running_proxy(
            bootstrap([http_listener([_tagged({"prefix": "/"}, "dns")])], [v6])
        ) as proxy:
            async with httpx.AsyncClient() as client:
                refused = await client.get(proxy.url("/echo/v6"))
            assert refused.status_code == 503
            assert proxy.cluster_stats().membership_total == 0
