"""The admin endpoint: readiness, stats (Prometheus and JSON), config dump, clusters, quitting.

The Prometheus scrape is read with prometheus_client's own parser, and ``docs/stats.md`` is
checked against a live scrape in both directions so the documentation cannot drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import re
import urllib.request
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import httpx
import pytest
from envoy.admin.v3 import config_dump_pb2
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

from meshproxy.admin.endpoint import Answer, Endpoint

from .harness import (
    Proxy,
    bootstrap,
    cluster,
    free_port,
    http_listener,
    proxy_process,
    route,
    running_proxy,
    tcp_listener,
)
from .upstreams import aiohttp_upstream

STATS_DOC = pathlib.Path(__file__).parents[2] / "docs" / "stats.md"
REQUESTS = 5

Sample = tuple[str, frozenset[tuple[str, str]]]  # name, labels
# Unsampled: the collector cluster (nothing listens there) is never called.
TRACING = {
    "random_sampling": {"value": 0},
    "provider": {
        "name": "envoy.tracers.opentelemetry",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
            "grpc_service": {"envoy_grpc": {"cluster_name": "otel"}},
        },
    },
}
CONNECTION_LIMIT_FILTER = {
    "name": "envoy.filters.network.connection_limit",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
        "stat_prefix": "cl",
        "max_connections": 100,
    },
}
COMPRESSOR_FILTER = {
    "name": "compress",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor",
        "compressor_library": {
            "name": "text",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip"
            },
        },
    },
}
RBAC_FILTER = {
    "name": "envoy.filters.network.rbac",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
        "stat_prefix": "tcp",
        "rules": {"policies": {"all": {"permissions": [{"any": True}], "principals": [{"any": True}]}}},
    },
}


@contextlib.asynccontextmanager
async def admin_of_busy_proxy() -> AsyncIterator[tuple[Proxy, httpx.AsyncClient]]:
    """A proxy with every stat scope present (http, tcp, cluster, listener, connection_limit,
    tracing, rbac, compressor) after a little traffic: ``REQUESTS`` answered 200 by the upstream
    and one 404 (no route)."""
    tcp = tcp_listener("backend")
    tcp["filter_chains"][0]["filters"][:0] = [CONNECTION_LIMIT_FILTER, RBAC_FILTER]
    async with aiohttp_upstream() as up:
        http = http_listener([route("/status/")], tracing=TRACING)
        http["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"].insert(0, COMPRESSOR_FILTER)
        doc = bootstrap([http, tcp], [cluster("backend", up), cluster("otel", free_port())])
        async with running_proxy(doc) as proxy, httpx.AsyncClient(base_url=proxy.admin_url) as admin:
            async with httpx.AsyncClient() as client:
                for _ in range(REQUESTS):
                    assert (await client.get(proxy.url("/status/200"))).status_code == 200
                assert (await client.get(proxy.url("/unrouted"))).status_code == 404
            yield proxy, admin


async def scrape(admin: httpx.AsyncClient) -> tuple[str, dict[Sample, float], dict[str, str]]:
    """The exposition text, every sample by (name, labels), and each family's type."""
    resp = await admin.get("/stats/prometheus")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    samples: dict[Sample, float] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(resp.text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return resp.text, samples, types


def sample(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_ready_says_live() -> None:
    async with admin_of_busy_proxy() as (_, admin):
        resp = await admin.get("/ready")
        assert (resp.status_code, resp.text) == (200, "LIVE\n")


async def test_prometheus_counters_after_traffic() -> None:
    async with admin_of_busy_proxy() as (_, admin):
        _, samples, _ = await scrape(admin)
    http = {"stat_prefix": "http"}
    backend = {"cluster_name": "backend"}
    assert sample(samples, "meshproxy_http_downstream_rq_total", **http) == REQUESTS + 1
    assert sample(samples, "meshproxy_http_downstream_rq_xx_total", **http, code_class="2xx") == REQUESTS
    assert sample(samples, "meshproxy_http_downstream_rq_xx_total", **http, code_class="4xx") == 1
    assert sample(samples, "meshproxy_http_no_route_total", **http) == 1
    assert sample(samples, "meshproxy_cluster_upstream_rq_total", **backend) == REQUESTS
    assert sample(samples, "meshproxy_cluster_upstream_cx_total", **backend) >= 1
    assert sample(samples, "meshproxy_listener_downstream_cx_total", listener="http") >= 1
    assert sample(samples, "meshproxy_server_live") == 1

    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == "meshproxy_http_downstream_rq_time_ms_bucket"
    )
    assert len(buckets) == 17 and buckets[-1] == (float("inf"), REQUESTS + 1)
    counts = [value for _, value in buckets]
    assert counts == sorted(counts), "histogram buckets must be cumulative"
    assert sample(samples, "meshproxy_http_downstream_rq_time_ms_count", **http) == REQUESTS + 1
    assert sample(samples, "meshproxy_http_downstream_rq_time_ms_sum", **http) > 0


async def test_prometheus_declares_each_family_once() -> None:
    """A Prometheus server rejects a whole scrape that declares one metric family twice."""
    async with admin_of_busy_proxy() as (_, admin):
        text, _, _ = await scrape(admin)
    declared = re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE)
    duplicates = sorted({name for name in declared if declared.count(name) > 1})
    assert duplicates == []


async def test_stats_flat_json() -> None:
    async with admin_of_busy_proxy() as (_, admin):
        resp = await admin.get("/stats?format=flat")
    assert resp.headers["content-type"] == "application/json"
    stats = resp.json()
    assert stats["http.http.downstream_rq_total"] == REQUESTS + 1
    assert stats["cluster.backend.upstream_rq_total"] == REQUESTS
    histogram = stats["http.http.downstream_rq_time"]
    assert histogram["count"] == REQUESTS + 1 and histogram["buckets"][-1] == ["+Inf", REQUESTS + 1]


async def test_config_dump_is_envoys_config_dump() -> None:
    # What tools that read Envoy's admin parse: a ConfigDump, in Envoy's order, with the
    # bootstrap, static clusters and listeners, and the inline route configuration; the secret's
    # private key redacted as Envoy does.
    async with aiohttp_upstream() as up:
        doc = bootstrap([http_listener([route("/status/")])], [cluster("backend", up)])
        doc["static_resources"]["secrets"] = [
            {"name": "svid", "tls_certificate": {"private_key": {"inline_string": "SECRET KEY"}}}
        ]
        async with running_proxy(doc) as proxy, httpx.AsyncClient(base_url=proxy.admin_url) as admin:
            answer = await admin.get("/config_dump")
            one = (await admin.get("/config_dump?resource=static_clusters")).json()
            by_name = (await admin.get("/config_dump?name_regex=^svi")).json()
            bad_regex = await admin.get("/config_dump?name_regex=(")
    assert answer.status_code == 200 and "SECRET KEY" not in answer.text
    dump = json_format.ParseDict(answer.json(), config_dump_pb2.ConfigDump())  # Envoy's proto reads it
    kinds = [c.type_url.rsplit(".", 1)[-1] for c in dump.configs]
    assert kinds == [
        "BootstrapConfigDump",
        "ClustersConfigDump",
        "ListenersConfigDump",
        "RoutesConfigDump",
        "SecretsConfigDump",
    ]
    configs = answer.json()["configs"]
    assert configs[0]["bootstrap"]["node"]["id"] == "test"
    assert [c["cluster"]["name"] for c in configs[1]["static_clusters"]] == ["backend"]
    assert [ln["listener"]["name"] for ln in configs[2]["static_listeners"]] == ["http"]
    assert [r["route_config"]["name"] for r in configs[3]["static_route_configs"]] == ["http_routes"]
    [secret] = configs[4]["static_secrets"]
    assert secret["secret"]["tls_certificate"]["private_key"]["inline_string"] == "[redacted]"
    assert [e["@type"].rsplit(".", 1)[-1] for e in one["configs"]] == ["StaticCluster"]
    assert [e["name"] for e in by_name["configs"]] == ["svid"]
    assert bad_regex.status_code == 400 and bad_regex.text.startswith("name_regex: ")


async def test_config_dump_compiled_reflects_listeners_and_clusters() -> None:
    async with admin_of_busy_proxy() as (_, admin):
        dump = (await admin.get("/config_dump?format=compiled")).json()
    config = dump["config"]
    assert [lst["name"] for lst in config["listeners"]] == ["http", "tcp"]
    assert [c["name"] for c in config["clusters"]] == ["backend", "otel"]
    hcm = config["listeners"][0]["filter_chains"][0]["filter"]
    assert hcm["stat_prefix"] == "http"
    assert hcm["max_request_headers_bytes"] == 60 * 1024
    [vhost] = hcm["route_config"]["virtual_hosts"]
    assert vhost["routes"][0]["action"]["cluster"] == "backend"


async def test_clusters_lists_hosts_with_request_counts() -> None:
    async with admin_of_busy_proxy() as (proxy, admin):
        backend, _otel = (await admin.get("/clusters")).json()
        [endpoint] = proxy.server.clusters.clusters["backend"].hosts
    assert backend["name"] == "backend" and backend["upstream_rq_total"] == REQUESTS
    [host] = backend["hosts"]
    assert host["address"] == endpoint.label
    assert host["rq_total"] == REQUESTS


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/no/such/page", 404, None),
        ("GET", "/quitquitquit", 405, "POST"),
        ("GET", "/drain_listeners", 405, "POST"),
    ],
)
async def test_admin_refuses(method: str, path: str, status: int, allow: str | None) -> None:
    # RFC 9110 15.5.6: a 405 names the methods the path takes in Allow.
    async with admin_of_busy_proxy() as (_, admin):
        resp = await admin.request(method, path)
        assert (resp.status_code, resp.headers.get("allow")) == (status, allow)
        assert (await admin.get("/ready")).status_code == 200, "the proxy must still be up"


def test_post_quitquitquit_exits_the_process(tmp_path: pathlib.Path) -> None:
    doc = bootstrap([http_listener([route()])], [cluster("backend", free_port())])
    with proxy_process(doc, tmp_path) as proc:
        request = urllib.request.Request(f"http://127.0.0.1:{proc.admin_port}/quitquitquit", method="POST")
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
        assert proc.proc.wait(timeout=10) == 0


# ------------------------------------------------------------------ docs/stats.md against a scrape

_DOC_ROW = re.compile(r"^\| `(meshproxy_\w+)` \| (\w+) \| ([^|]*) \|", re.MULTILINE)


def documented() -> set[tuple[str, str, frozenset[str]]]:
    rows = _DOC_ROW.findall(STATS_DOC.read_text(encoding="utf-8"))
    assert rows, f"no metric rows found in {STATS_DOC}"
    return {(name, kind, frozenset(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


EMPTY: frozenset[str] = frozenset({"<no sample yet>"})


def exported(text: str) -> set[tuple[str, str, frozenset[str]]]:
    """(name as documented, type, label names) for every series in a scrape: counters by their
    ``_total`` name, histograms by their base name (``le`` is the bucket label, not a series)."""
    out = set()
    for family in text_string_to_metric_families(text):
        if not family.samples:
            # A labelled counter with no sample yet (e.g. TLS handshakes by group on a proxy
            # without TLS): its name is exported, its labels cannot be seen.
            suffix = "_total" if family.type == "counter" else ""
            out.add((family.name + suffix, family.type, EMPTY))
        for s in family.samples:
            if family.type == "histogram":
                name = family.name
            elif family.type == "counter":
                name = family.name + "_total"
            else:
                name = s.name
            out.add((name, family.type, frozenset(s.labels) - {"le"}))
    return out


async def test_stats_doc_matches_the_scrape() -> None:
    async with admin_of_busy_proxy() as (_, admin):
        text, _, _ = await scrape(admin)
    docs, live = documented(), exported(text)
    # The xDS client's stats are exported where it runs (test_admin_stats.py checks them).
    docs = {row for row in docs if not row[0].startswith("meshproxy_xds_")}
    unseen = {name for name, _, labels in live if labels is EMPTY}
    docs = {(n, t, EMPTY if n in unseen else labels) for n, t, labels in docs}
    assert sorted(live - docs) == [], "exported but not documented in docs/stats.md"
    assert sorted(docs - live) == [], "documented in docs/stats.md but not exported"


# ------------------------------------------------------------------ answers that come later


async def test_an_answer_that_comes_later_keeps_order_and_the_connection() -> None:
    """A handler may return an awaitable (the worker supervisor's admin asks its workers):
    reading pauses until it is answered; a request pipelined behind it closes the connection
    after that answer, so answers can never come out of order."""
    release = asyncio.Event()
    seen: list[str] = []

    async def later(path: str) -> Answer:
        await release.wait()
        return 200, f"later {path}\n".encode(), b"text/plain"

    def handle(method: bytes, path: str) -> Coroutine[Any, Any, Answer]:
        seen.append(path)
        return later(path)

    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: Endpoint(handle), "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
        await writer.drain()
        await _until_seen(seen, 1)
        release.set()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(len(b"later /a\n")) == b"later /a\n"
        # keep-alive: the next request is read and answered on the same connection
        writer.write(b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        assert await reader.readexactly(len(b"later /b\n")) == b"later /b\n"
        writer.close()

        release.clear()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /c HTTP/1.1\r\nhost: x\r\n\r\nGET /d HTTP/1.1\r\nhost: x\r\n\r\n")
        await writer.drain()
        await _until_seen(seen, 3)
        release.set()
        rest = await reader.read()  # the answer to /c, then the close
        assert b"later /c" in rest and b"/d" not in rest
        assert seen == ["/a", "/b", "/c"]
        writer.close()
    finally:
        srv.close()


async def _until_seen(seen: list[str], n: int) -> None:
    async with asyncio.timeout(5):
        while len(seen) < n:
            await asyncio.sleep(0.01)
