"""The admin's ``/stats`` in Envoy's forms over a real socket: the text format (parsed line by
line), ``?format=json`` (Envoy's shape), ``filter=`` / ``usedonly`` / ``type=``,
``?format=prometheus``, refusals naming the parameter, and the xDS client's counters.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshproxy.admin.stats_format import QUANTILES

from .harness import eventually, running_proxy
from .test_admin import REQUESTS, admin_of_busy_proxy, documented, exported
from .test_xds_files import CLUSTER, TIMEOUT, direct, files_bootstrap, write_atomically

_LINE = re.compile(r"^([\w.:-]+): (.+)$")
_QUANTILE = re.compile(r"P([\d.]+)\(nan,([^)]+)\)")


def parse_text(body: str) -> tuple[dict[str, float], dict[str, str], list[str]]:
    """Envoy's text format: (counters and gauges, histograms' summaries, names in order)."""
    scalars: dict[str, float] = {}
    histograms: dict[str, str] = {}
    order = []
    for line in body.splitlines():
        m = _LINE.match(line)
        assert m, f"not a `name: value` line: {line!r}"
        name, value = m.groups()
        order.append(name)
        if value.startswith("P0(") or value == "No recorded values":
            histograms[name] = value
        else:
            scalars[name] = float(value)
    return scalars, histograms, order


async def test_text_format_counts_and_histograms() -> None:
    async with admin_of_busy_proxy() as (_, admin):
        resp = await admin.get("/stats")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    scalars, histograms, order = parse_text(resp.text)
    # Counters and gauges sorted by name, then the histograms sorted by name (as Envoy prints).
    assert order == sorted(scalars) + sorted(histograms)
    assert scalars["http.http.downstream_rq_total"] == REQUESTS + 1
    assert scalars["http.http.downstream_rq_2xx"] == REQUESTS
    assert scalars["http.http.downstream_rq_4xx"] == 1
    assert scalars["cluster.backend.upstream_rq_total"] == REQUESTS
    assert scalars["server.live"] == 1
    summary = histograms["http.http.downstream_rq_time"]
    quantiles = _QUANTILE.findall(summary)
    assert [float(q) for q, _ in quantiles] == list(QUANTILES)
    values = [float(v) for _, v in quantiles]
    assert values == sorted(values) and values[-1] > 0
    assert histograms["cluster.otel.upstream_rq_time"] == "No recorded values"


async def test_filter_usedonly_and_type() -> None:
    async with admin_of_busy_proxy() as (_, admin):
        filtered = parse_text((await admin.get("/stats", params={"filter": "rq_[24]xx$"})).text)
        used = parse_text((await admin.get("/stats?usedonly")).text)
        everything = parse_text((await admin.get("/stats")).text)
        gauges = parse_text((await admin.get("/stats?type=Gauges&filter=^server\\.")).text)
        histograms = parse_text((await admin.get("/stats?type=Histograms&usedonly")).text)
    assert (
        filtered[0]
        == {
            "http.http.downstream_rq_2xx": REQUESTS,
            "http.http.downstream_rq_4xx": 1,
            "cluster.backend.upstream_rq_2xx": REQUESTS,
            "cluster.backend.upstream_rq_4xx": 0,
            "cluster.otel.upstream_rq_2xx": 0,
            "cluster.otel.upstream_rq_4xx": 0,
        }
        and filtered[1] == {}
    )
    assert used[0] and all(used[0].values()), "usedonly keeps the stats that moved"
    assert set(used[0]) < set(everything[0])
    assert "cluster.otel.upstream_rq_time" not in used[1] and "http.http.downstream_rq_time" in used[1]
    assert set(gauges[0]) == {"server.live", "server.draining"} and gauges[1] == {}
    assert histograms[0] == {} and set(histograms[1]) == set(used[1])


async def test_json_format_is_envoys_shape() -> None:
    async with admin_of_busy_proxy() as (_, admin):
        doc = (await admin.get("/stats?format=json")).json()
        text = parse_text((await admin.get("/stats")).text)
    *stats, last = doc["stats"]
    assert {s["name"]: s["value"] for s in stats} == text[0]
    hist = last["histograms"]
    assert hist["supported_quantiles"] == list(QUANTILES)
    by_name = {h["name"]: h["values"] for h in hist["computed_quantiles"]}
    assert set(by_name) == set(text[1])
    rq_time = by_name["http.http.downstream_rq_time"]
    assert len(rq_time) == len(QUANTILES) and all(v["interval"] is None for v in rq_time)
    # The text prints six significant digits, as Envoy's does.
    assert [v["cumulative"] for v in rq_time] == pytest.approx(
        [float(v) for _, v in _QUANTILE.findall(text[1]["http.http.downstream_rq_time"])], rel=1e-5
    )
    assert all(v["cumulative"] is None for v in by_name["cluster.otel.upstream_rq_time"])


async def test_format_prometheus_is_the_prometheus_endpoint() -> None:
    async with admin_of_busy_proxy() as (_, admin):
        via_stats = await admin.get("/stats?format=prometheus")
        direct_ = await admin.get("/stats/prometheus")
    assert via_stats.headers["content-type"] == direct_.headers["content-type"]
    names = {f.name for f in text_string_to_metric_families(via_stats.text)}
    assert names == {f.name for f in text_string_to_metric_families(direct_.text)}
    assert "meshproxy_http_downstream_rq" in names


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("format=yaml", "format=yaml"),
        ("filter=(unclosed", "filter:"),
        ("type=Timers", "type=Timers"),
        ("histogram_buckets=cumulative", "histogram_buckets"),
    ],
)
async def test_bad_parameters_are_refused_by_name(query: str, named: str) -> None:
    async with admin_of_busy_proxy() as (_, admin):
        resp = await admin.get(f"/stats?{query}")
        assert resp.status_code == 400 and resp.text.startswith(named), resp.text
        assert (await admin.get("/ready")).status_code == 200


async def test_xds_client_counters_in_stats_and_prometheus(tmp_path: Path) -> None:
    lds, cds = tmp_path / "lds.json", tmp_path / "cds.json"
    write_atomically(cds, [{"@type": CLUSTER, "name": "backend", "connect_timeout": "1s"}], "c1")
    write_atomically(lds, [direct("one")], "l1")
    async with running_proxy(files_bootstrap(lds, cds)) as proxy, httpx.AsyncClient() as admin:
        await eventually(lambda: proxy.server.ready, TIMEOUT, "the first configuration from the files")
        text = (await admin.get(f"{proxy.admin_url}/stats?filter=^xds\\.")).text
        scrape = (await admin.get(f"{proxy.admin_url}/stats/prometheus")).text
        flat = json.loads((await admin.get(f"{proxy.admin_url}/stats?format=flat")).text)
    scalars, _, _ = parse_text(text)
    assert scalars["xds.responses"] >= 2 and scalars["xds.applied"] >= 1 and scalars["xds.nacks"] == 0
    assert flat["xds.applied"] == scalars["xds.applied"]
    families = {f.name: f for f in text_string_to_metric_families(scrape)}
    assert families["meshproxy_xds_applied"].samples[0].value == scalars["xds.applied"]
    assert not math.isnan(families["meshproxy_xds_max_slice"].samples[0].value)
    # docs/stats.md documents exactly the xDS families exported.
    xds_docs = {row for row in documented() if row[0].startswith("meshproxy_xds_")}
    assert xds_docs == {row for row in exported(scrape) if row[0].startswith("meshproxy_xds_")}
