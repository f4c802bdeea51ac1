"""Istio's metrics: the istio.stats filter's configuration, workload names from SPIFFE IDs, the
destination service from the Host header, and the bound on label sets."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from certs import make_ca, make_leaf

from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.config.model import HttpConnectionManager, IstioStats
from meshproxy.errors import ConfigError
from meshproxy.identity.spiffe import SpiffeId
from meshproxy.telemetry.istio import REQUEST_LABELS, HttpReporter, IstioMetrics, _Reporter, workload

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {
    "name": "r",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
PATH = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0]"


def _doc(stats_filter: dict[str, Any]) -> str:
    manager = {
        "@type": HCM,
        "stat_prefix": "in",
        "http_filters": [stats_filter, ROUTER],
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": []}]},
    }
    listener = {
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": manager}]}],
    }
    return json.dumps({"static_resources": {"listeners": [listener]}})


def _struct(
    value: dict[str, Any], type_url: str = "type.googleapis.com/stats.PluginConfig"
) -> dict[str, Any]:
    return {
        "name": "istio.stats",
        "typed_config": {
            "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
            "type_url": type_url,
            "value": value,
        },
    }


def _manager(stats_filter: dict[str, Any]) -> HttpConnectionManager:
    f = parse_bootstrap(_doc(stats_filter), source="t").listeners[0].filter_chains[0].filter
    assert isinstance(f, HttpConnectionManager)
    return f


def _problems(stats_filter: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_bootstrap(_doc(stats_filter), source="t")
    return str(raised.value)


def test_the_filter_compiles_from_istios_typed_struct() -> None:
    assert _manager(_struct({})).istio_stats == IstioStats()
    fallback = _struct({"disable_host_header_fallback": True})
    assert _manager(fallback).istio_stats == IstioStats(disable_host_header_fallback=True)


def test_customisations_and_other_shapes_are_refused_with_their_path() -> None:
    assert (
        f"{PATH}.typed_config.value.metrics: is not supported: meshproxy exports Istio's standard metrics"
        in _problems(_struct({"metrics": [{"name": "requests_total"}]}))
    )
    assert f"{PATH}.typed_config: is required: a TypedStruct with type_url stats.PluginConfig" in _problems(
        {"name": "istio.stats"}
    )
    assert f"{PATH}.typed_config.type_url: type.googleapis.com/other.Config is not supported" in _problems(
        {**_struct({}, "type.googleapis.com/other.Config"), "name": "istio.stats"}
    )
    assert "disable_host_header_fallback: must be true or false" in _problems(
        _struct({"disable_host_header_fallback": "yes"})
    )


def test_another_typed_struct_filter_is_not_taken_for_istio_stats() -> None:
    optional = {
        **_struct({}, "type.googleapis.com/io.istio.http.peer_metadata.Config"),
        "name": "x",
        "is_optional": True,
    }
    assert _manager(optional).istio_stats is None


def test_workloads_come_from_spiffe_ids() -> None:
    assert workload("spiffe://td/ns/shop/sa/reviews") == ("reviews", "shop", "spiffe://td/ns/shop/sa/reviews")
    assert workload("spiffe://td/other/path") == ("unknown", "unknown", "spiffe://td/other/path")
    assert workload(None) == ("unknown", "unknown", "unknown")


@pytest.mark.parametrize(
    ("authority", "fallback_disabled", "service"),
    [
        (b"reviews.shop.svc:9080", False, "reviews.shop.svc"),
        (b"[::1]:80", False, "[::1]"),
        (b"reviews", False, "reviews"),
        (None, False, "unknown"),
        (b"reviews:9080", True, "unknown"),
    ],
)
def test_the_destination_service_is_the_host_header_without_its_port(
    authority: bytes | None, fallback_disabled: bool, service: str
) -> None:
    reporter = _Reporter(IstioStats(fallback_disabled), IstioMetrics(), True, None)
    assert reporter.service(authority) == service


def test_label_sets_past_the_bound_count_into_the_other_series() -> None:
    metrics = IstioMetrics(limit=2)
    keys = [tuple(f"{label}{i}" for label in REQUEST_LABELS) for i in range(4)]
    for key in keys:
        metrics.request_series(key).count += 1
    metrics.request_series(keys[0]).count += 1  # a known one still has its own series
    other = ("other",) * len(REQUEST_LABELS)
    assert {key: s.count for key, s in metrics.requests.items()} == {keys[0]: 2, keys[1]: 1, other: 2}


def _exchange(cluster: Any = None, host_tls: Any = None) -> Any:
    host = SimpleNamespace(tls=host_tls)
    return SimpleNamespace(start=10.0, cluster=cluster, host=host)


def _stream(content_type: bytes = b"application/json", status: int = 200) -> Any:
    return SimpleNamespace(
        headers=[(b"accept", b"*/*"), (b"content-type", content_type)],
        authority=b"reviews.shop:9080",
        status=status,
        flags="-",
        rx_bytes=10,
        tx_bytes=2000,
    )


def _tls(peer: str, group: str = "X25519MLKEM768") -> Any:
    return SimpleNamespace(peer_uris=(peer,), group=group, peer_chain=(object(),))


def test_a_destination_reporter_labels_the_caller_and_itself() -> None:
    metrics = IstioMetrics()
    local = SpiffeId.parse("spiffe://td/ns/shop/sa/reviews")
    reporter = HttpReporter(IstioStats(), metrics, True, local)
    peer = SimpleNamespace(tls=_tls("spiffe://td/ns/web/sa/frontend"))
    reporter.request(_exchange(), _stream(b"application/grpc+proto"), peer, 10.25)
    reporter.request(_exchange(), _stream(b"application/grpc+proto"), peer, 10.5)
    ((key, series),) = metrics.requests.items()
    assert dict(zip(REQUEST_LABELS, key, strict=True)) == {
        "reporter": "destination",
        "source_workload": "frontend",
        "source_workload_namespace": "web",
        "source_principal": "spiffe://td/ns/web/sa/frontend",
        "destination_workload": "reviews",
        "destination_workload_namespace": "shop",
        "destination_principal": "spiffe://td/ns/shop/sa/reviews",
        "destination_service": "reviews.shop",
        "request_protocol": "grpc",
        "response_code": "200",
        "grpc_response_status": "",
        "response_flags": "-",
        "connection_security_policy": "mutual_tls",
        "tls_group": "X25519MLKEM768",
    }
    assert series.count == 2 and series.duration.sum == 750.0 and series.response_bytes.sum == 4000


def test_a_source_reporter_names_itself_by_the_clusters_certificate_and_the_host_it_reached() -> None:
    metrics = IstioMetrics()
    reporter = HttpReporter(IstioStats(), metrics, False, None)
    ours = make_leaf(make_ca(), "spiffe://td/ns/web/sa/frontend")
    cluster = SimpleNamespace(
        config=SimpleNamespace(name="reviews", tls=SimpleNamespace(certificate_chain=ours.cert_pem))
    )
    upstream = _tls("spiffe://td/ns/shop/sa/reviews", "X25519")
    reporter.request(_exchange(cluster, upstream), _stream(status=503), SimpleNamespace(tls=None), 11.0)
    ((key, _),) = metrics.requests.items()
    labels = dict(zip(REQUEST_LABELS, key, strict=True))
    assert labels["reporter"] == "source" and labels["source_principal"] == "spiffe://td/ns/web/sa/frontend"
    assert labels["destination_workload"] == "reviews" and labels["tls_group"] == "X25519"
    assert labels["connection_security_policy"] == "unknown" and labels["response_code"] == "503"
    assert labels["request_protocol"] == "http"
