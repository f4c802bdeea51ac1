"""Istio's standard metrics on the Prometheus endpoint, from the ``istio.stats`` filter.

HTTP: the two sidecars of tests/integration/test_mesh_mtls.py, each with the istio.stats http
filter; A's listener is OUTBOUND (reporter ``source``), B's INBOUND (reporter ``destination``).
Both describe the same requests with the identities of both ends, the mutual-TLS policy and the
negotiated group. TCP: a tcp_proxy chain with the istio.stats network filter counts a session's
open, close and bytes.
"""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import httpx
from certs import make_ca, make_leaf
from prometheus_client.parser import text_string_to_metric_families

from .harness import bootstrap, cluster, eventually, running_proxy, tcp_listener
from .test_mesh_mtls import CLIENT_ID, SERVER_ID, inbound, outbound
from .upstreams import aiohttp_upstream, tcp_echo_upstream

ISTIO_STATS = {
    "name": "istio.stats",
    "typed_config": {
        "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type_url": "type.googleapis.com/stats.PluginConfig",
        "value": {},
    },
}
Samples = list[tuple[str, dict[str, str], float]]


def with_istio_stats(doc: dict[str, Any], direction: str) -> dict[str, Any]:
    listener = doc["static_resources"]["listeners"][0]
    listener["traffic_direction"] = direction
    listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"].insert(0, ISTIO_STATS)
    return doc


async def scrape(admin_url: str) -> dict[str, Samples]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(admin_url + "/stats/prometheus")).text
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
        if family.name.startswith("istio_")
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    found = [v for n, ls, v in samples if n == name and labels.items() <= ls.items()]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


async def test_both_sidecars_report_the_requests_with_both_identities(tmp_path: pathlib.Path) -> None:
    async with aiohttp_upstream("app") as app:
        b_doc = with_istio_stats(inbound(app, make_leaf(make_ca(), SERVER_ID)), "INBOUND")
        async with running_proxy(b_doc) as b:
            client = make_leaf(make_ca(), CLIENT_ID)
            a_doc = with_istio_stats(outbound(b.port("inbound"), client, tmp_path / "a.log"), "OUTBOUND")
            async with running_proxy(a_doc) as a, httpx.AsyncClient() as http:
                statuses = [
                    (await http.get(a.url(path, "outbound"))).status_code
                    for path in ("/a", "/b", "/status/404")
                ]
                assert statuses == [200, 200, 404]
                seen_by_a, seen_by_b = await scrape(a.admin_url), await scrape(b.admin_url)
    common = {
        "source_workload": "frontend",
        "source_workload_namespace": "default",
        "source_principal": CLIENT_ID,
        "destination_workload": "backend",
        "destination_workload_namespace": "default",
        "destination_principal": SERVER_ID,
        "request_protocol": "http",
        "tls_group": "X25519MLKEM768",
        "grpc_response_status": "",
    }
    requests_b = seen_by_b["istio_requests"]
    ok_b = {
        **common,
        "reporter": "destination",
        "connection_security_policy": "mutual_tls",
        "response_code": "200",
    }
    assert value(requests_b, "istio_requests_total", **ok_b) == 2
    assert value(requests_b, "istio_requests_total", **{**ok_b, "response_code": "404"}) == 1
    (labels,) = {frozenset(ls.items()) for _, ls, _ in requests_b if ls["response_code"] == "200"}
    assert dict(labels)["destination_service"] == "127.0.0.1"
    assert dict(labels)["response_flags"] == "-"
    ok_a = {**common, "reporter": "source", "connection_security_policy": "unknown", "response_code": "200"}
    assert value(seen_by_a["istio_requests"], "istio_requests_total", **ok_a) == 2
    durations = seen_by_b["istio_request_duration_milliseconds"]
    assert value(durations, "istio_request_duration_milliseconds_count", **ok_b) == 2
    assert value(durations, "istio_request_duration_milliseconds_bucket", le="+Inf", **ok_b) == 2
    sizes = seen_by_b["istio_response_bytes"]
    assert value(sizes, "istio_response_bytes_count", **ok_b) == 2
    assert value(sizes, "istio_response_bytes_sum", **ok_b) > 0
    assert value(seen_by_b["istio_request_bytes"], "istio_request_bytes_count", **ok_b) == 2


async def test_a_tcp_session_is_opened_closed_and_its_bytes_counted() -> None:
    async with tcp_echo_upstream() as echo:
        listener = tcp_listener("echo")
        listener["filter_chains"][0]["filters"].insert(0, ISTIO_STATS)
        async with running_proxy(bootstrap([listener], [cluster("echo", echo)])) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port("tcp"))
            writer.write(b"hello, mesh")
            assert await reader.readexactly(11) == b"hello, mesh"
            writer.close()
            await writer.wait_closed()
            store = proxy.server.istio
            await eventually(lambda: any(s.closed for s in store.tcp.values()), what="the session closed")
            seen = await scrape(proxy.admin_url)
    labels = {
        "reporter": "destination",
        "source_workload": "unknown",
        "source_principal": "unknown",
        "destination_service": "echo",
        "request_protocol": "tcp",
        "connection_security_policy": "none",
        "tls_group": "none",
    }
    assert value(seen["istio_tcp_connections_opened"], "istio_tcp_connections_opened_total", **labels) == 1
    assert value(seen["istio_tcp_connections_closed"], "istio_tcp_connections_closed_total", **labels) == 1
    assert value(seen["istio_tcp_received_bytes"], "istio_tcp_received_bytes_total", **labels) == 11
    assert value(seen["istio_tcp_sent_bytes"], "istio_tcp_sent_bytes_total", **labels) == 11
