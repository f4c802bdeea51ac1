"""The stat tables in meshproxy/stats.py and everything derived from them: slots, initial values,
the Prometheus exposition (names, types, help, labels), ``/stats`` JSON and docs/stats.md.

The exposition is produced by prometheus-client's own ``generate_latest`` and read back with its
parser, so what is checked is the text a scraper sees.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import MemberDescriptorType

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meshproxy import stats as stats_module
from meshproxy.stats import (
    CODE_CLASS,
    SCOPES,
    ClusterStats,
    CompressorStats,
    ConnectionLimitStats,
    Histogram,
    HttpStats,
    ListenerStats,
    RbacStats,
    StatsCollector,
    StatSet,
    Store,
    TcpStats,
    TracingStats,
    XdsStats,
    render_docs,
    stats_json,
)

REPO = Path(__file__).resolve().parents[2]
TABLES: tuple[type[StatSet], ...] = (HttpStats, ClusterStats, ListenerStats, TcpStats)


def test_committed_docs_are_what_the_tables_render() -> None:
    committed = (REPO / "docs" / "stats.md").read_text(encoding="utf-8")
    assert committed == render_docs(), "docs/stats.md is stale: run `make stats-doc`"


def test_python_m_meshproxy_stats_prints_the_docs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "meshproxy.stats"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out == render_docs()


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.__name__)
def test_each_stat_is_a_plain_slot(table: type[StatSet]) -> None:
    assert table.__slots__ == tuple(table.STATS)
    for name in table.STATS:
        # A member descriptor is what makes ``stats.x += 1`` a plain slot store (DESIGN 7).
        assert isinstance(table.__dict__[name], MemberDescriptorType), name
    obj = table()
    assert not hasattr(obj, "__dict__")
    with pytest.raises(AttributeError):
        obj.not_a_stat = 1  # type: ignore[attr-defined]  # the point: undeclared stats are refused


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.__name__)
def test_initial_values_follow_the_kind(table: type[StatSet]) -> None:
    a, b = table(), table()
    for name, stat in table.STATS.items():
        value = getattr(a, name)
        if stat.kind == "histogram":
            assert isinstance(value, Histogram) and value.count == 0
        elif stat.by == CODE_CLASS:
            assert value == [0] * 6
        elif stat.by is not None:
            assert value == {}
        else:
            assert value == 0
        if not isinstance(value, int):
            assert value is not getattr(b, name), f"{name} is shared between instances"


def test_names_are_unique_on_the_wire() -> None:
    names = [stat.exported_name(s.name, n) for s in SCOPES for n, stat in s.stats.items()]
    assert len(names) == len(set(names))


def _busy_store() -> Store:
    store = Store()
    http = store.http_stats("ingress")
    http.downstream_rq_total += 3
    http.downstream_rq_xx[2] += 2
    http.downstream_rq_xx[5] += 1
    http.downstream_rq_active = 1
    http.downstream_rq_time.observe(7.0)
    cluster = store.cluster_stats("backend")
    cluster.outlier_detection_ejections_by_kind["consecutive_5xx"] = 4
    cluster.upstream_cx_http2_total += 1
    store.listener_stats("l0").ssl_handshakes_by_group["X25519MLKEM768"] = 2
    store.tcp_stats("tcp").downstream_cx_rx_bytes_total += 10
    store.connection_limit_stats("cl").limited_connections += 1
    store.tracing_stats("otel").otel_spans_sent += 1
    store.rbac_stats("http.ingress.rbac").denied += 1
    store.compressor_stats("http.ingress.compressor.text.gzip").compressed += 1
    store.server["live"] = 1
    store.xds = XdsStats()
    store.xds.acks += 1
    return store


def _scrape(store: Store) -> dict[str, object]:
    registry = CollectorRegistry()
    registry.register(StatsCollector(store))
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_exposition_has_every_stat_with_its_help_and_type() -> None:
    families = _scrape(_busy_store())
    expected = {}
    for scope in SCOPES:
        for name, stat in scope.stats.items():
            wire = stat.exported_name(scope.name, name)
            # The parser names counter families without their "_total".
            expected[wire.removesuffix("_total") if stat.kind == "counter" else wire] = (stat.kind, stat.help)
    got = {name: (f.type, f.documentation) for name, f in families.items()}  # type: ignore[attr-defined]
    assert got == expected


def test_exposition_values_and_labels() -> None:
    families = _scrape(_busy_store())

    def samples(family: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        f = families[family]
        return {(s.name, frozenset(s.labels.items())): s.value for s in f.samples}  # type: ignore[attr-defined]

    ingress = ("stat_prefix", "ingress")
    assert (
        samples("meshproxy_http_downstream_rq")[("meshproxy_http_downstream_rq_total", frozenset({ingress}))]
        == 3
    )
    xx = samples("meshproxy_http_downstream_rq_xx")
    assert {dict(labels)["code_class"]: v for (_, labels), v in xx.items()} == {
        "1xx": 0, "2xx": 2, "3xx": 0, "4xx": 0, "5xx": 1,
    }  # fmt: skip
    assert samples("meshproxy_http_downstream_rq_active") == {
        ("meshproxy_http_downstream_rq_active", frozenset({ingress})): 1
    }
    hist = samples("meshproxy_http_downstream_rq_time_ms")
    assert hist[("meshproxy_http_downstream_rq_time_ms_count", frozenset({ingress}))] == 1
    assert hist[("meshproxy_http_downstream_rq_time_ms_sum", frozenset({ingress}))] == 7.0
    ejections = samples("meshproxy_cluster_outlier_detection_ejections_by_kind")
    assert ejections == {
        (
            "meshproxy_cluster_outlier_detection_ejections_by_kind_total",
            frozenset({("cluster_name", "backend"), ("kind", "consecutive_5xx")}),
        ): 4
    }
    # "_total" in the stat's own name is not doubled on the wire.
    assert "meshproxy_cluster_upstream_cx_http2" in families
    assert (
        samples("meshproxy_tcp_downstream_cx_rx_bytes")[
            ("meshproxy_tcp_downstream_cx_rx_bytes_total", frozenset({("stat_prefix", "tcp")}))
        ]
        == 10
    )
    assert samples("meshproxy_server_live") == {("meshproxy_server_live", frozenset()): 1}


def test_scopes_without_entries_are_not_exported() -> None:
    assert sorted(_scrape(Store())) == [
        "meshproxy_server_draining",
        "meshproxy_server_live",
        "meshproxy_server_worker_restarts",
    ]


def test_stats_json_lists_every_stat_of_every_entry() -> None:
    out = stats_json(_busy_store())
    expected = {
        f"{scope}.{key}.{name}"
        for scope, key, table in (
            ("http", "ingress", HttpStats),
            ("cluster", "backend", ClusterStats),
            ("listener", "l0", ListenerStats),
            ("tcp", "tcp", TcpStats),
            ("connection_limit", "cl", ConnectionLimitStats),
            ("tracing", "otel", TracingStats),
            ("rbac", "http.ingress.rbac", RbacStats),
            ("compressor", "http.ingress.compressor.text.gzip", CompressorStats),
        )
        for name in table.STATS
    }
    assert set(out) == expected
    assert out["http.ingress.downstream_rq_total"] == 3
    assert out["http.ingress.downstream_rq_time"]["count"] == 1
    assert out["listener.l0.ssl_handshakes_by_group"] == {"X25519MLKEM768": 2}
    assert out["connection_limit.cl.limited_connections"] == 1
    assert out["rbac.http.ingress.rbac.denied"] == 1


def _data_plane_source() -> str:
    package = Path(stats_module.__file__).resolve().parent
    own = {package / "stats.py", package / "admin" / "server.py"}  # they only read the tables
    return "\n".join(
        path.read_text(encoding="utf-8")
        for pattern in ("*.py", "*.pyx")
        for path in sorted(package.rglob(pattern))
        if path not in own
    )


def test_every_stat_is_moved_by_the_data_plane() -> None:
    """A stat no code outside the exporter names is dead weight: it would read 0 for ever.
    Names are looked for as attributes (``.x``) or as keys (``"x"``: the breaker gauges are set
    from a dict, the server's from ``store.server[...]``)."""
    source = _data_plane_source()
    dead = [
        f"{scope.name}.{name}"
        for scope in SCOPES
        for name in scope.stats
        if not re.search(rf"\.{name}\b|[\"']{name}[\"']", source)
    ]
    assert dead == []
