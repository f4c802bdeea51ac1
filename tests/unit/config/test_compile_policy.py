"""compile_cluster's admission and health policy: circuit_breakers, outlier_detection (with the
LatencyEjection monitor), health_checks; EDS clusters and compile_load_assignment."""

# ruff: noqa: E501 (the tables hold whole expected messages; splitting them hides what users read)

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import json_format

from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.config.compile import compile_cluster
from meshproxy.config.compile_cluster import compile_load_assignment
from meshproxy.config.model import Cluster, Endpoint, Locality, LocalityLbEndpoints, SocketAddress
from meshproxy.config.policy import (
    DEFAULT_THRESHOLDS,
    HealthCheck,
    LatencyEjection,
    OutlierDetection,
    RetryBudget,
    Thresholds,
)

TYPED_STRUCT = "type.googleapis.com/xds.type.v3.TypedStruct"
LATENCY = "type.googleapis.com/meshproxy.outlier.v1.LatencyEjection"
OD = "c.outlier_detection"
HC0 = "c.health_checks[0]"


def cluster(**fields: Any) -> dict[str, Any]:
    return {"name": "c", "type": "STATIC"} | fields


def compiled(doc: dict[str, Any]) -> tuple[Cluster | None, list[str]]:
    problems: list[str] = []
    result = compile_cluster(json_format.ParseDict(doc, cluster_pb2.Cluster()), "c", problems)
    assert (result is None) == bool(problems), "a cluster is returned exactly when there is no problem"
    return result, problems


def valid(doc: dict[str, Any]) -> Cluster:
    result, problems = compiled(doc)
    assert problems == []
    assert result is not None
    return result


def latency_monitor(**value: Any) -> dict[str, Any]:
    return {
        "name": "meshproxy.outlier_detection_monitors.latency",
        "typed_config": {"@type": TYPED_STRUCT, "type_url": LATENCY, "value": value},
    }


def check(**fields: Any) -> dict[str, Any]:
    base = {"timeout": "1s", "interval": "5s", "unhealthy_threshold": 3, "healthy_threshold": 2}
    return {k: v for k, v in (base | fields).items() if v is not None}


# --------------------------------------------------------------------------- circuit breakers


def test_circuit_breaker_thresholds_by_priority() -> None:
    result = valid(
        cluster(
            circuit_breakers={
                "thresholds": [
                    {"priority": "HIGH", "max_connections": 5, "max_retries": 0},
                    {
                        "max_connections": 64,
                        "max_pending_requests": 10,
                        "max_requests": 100,
                        "max_retries": 7,
                        "retry_budget": {"budget_percent": {"value": 25.5}, "min_retry_concurrency": 1},
                        "track_remaining": True,
                    },
                ]
            }
        )
    )
    assert result.thresholds == (
        Thresholds("DEFAULT", 64, 10, 100, 7, RetryBudget(25.5, 1), track_remaining=True),
        Thresholds("HIGH", max_connections=5, max_retries=0),
    )
    assert result.max_idle_connections == 64


def test_circuit_breaker_defaults() -> None:
    assert valid(cluster()).thresholds == (DEFAULT_THRESHOLDS,)
    only_high = valid(cluster(circuit_breakers={"thresholds": [{"priority": "HIGH", "max_requests": 1}]}))
    assert only_high.thresholds == (DEFAULT_THRESHOLDS, Thresholds("HIGH", max_requests=1))
    assert only_high.max_idle_connections == 1024
    budget = valid(cluster(circuit_breakers={"thresholds": [{"retry_budget": {}}]}))
    assert budget.thresholds[0].retry_budget == RetryBudget(20.0, 3)


def test_circuit_breaker_rejections() -> None:
    doc = cluster(
        circuit_breakers={
            "thresholds": [
                {"max_connections": 1},
                {"priority": "DEFAULT"},
                {"priority": "HIGH", "retry_budget": {"budget_percent": {"value": 150}}},
            ]
        }
    )
    assert compiled(doc)[1] == [
        "c.circuit_breakers.thresholds[1].priority: DEFAULT is already given by thresholds[0]",
        "c.circuit_breakers.thresholds[2].retry_budget.budget_percent.value: 150 is out of range; use 0..100",
    ]


# --------------------------------------------------------------------------- outlier detection


def test_outlier_detection_defaults_follow_envoy() -> None:
    assert valid(cluster(outlier_detection={})).outlier_detection == OutlierDetection()
    assert valid(cluster()).outlier_detection is None


def test_outlier_detection_every_field() -> None:
    doc = cluster(
        outlier_detection={
            "consecutive_5xx": 3,
            "consecutive_gateway_failure": 4,
            "consecutive_local_origin_failure": 6,
            "split_external_local_origin_errors": True,
            "always_eject_one_host": True,
            "interval": "2s",
            "base_ejection_time": "10s",
            "max_ejection_time": "60s",
            "max_ejection_percent": 50,
            "enforcing_consecutive_5xx": 90,
            "enforcing_consecutive_gateway_failure": 80,
            "enforcing_consecutive_local_origin_failure": 70,
            "enforcing_success_rate": 60,
            "enforcing_local_origin_success_rate": 50,
            "success_rate_minimum_hosts": 3,
            "success_rate_request_volume": 20,
            "success_rate_stdev_factor": 1500,
            "enforcing_failure_percentage": 40,
            "enforcing_failure_percentage_local_origin": 30,
            "failure_percentage_minimum_hosts": 2,
            "failure_percentage_request_volume": 10,
            "failure_percentage_threshold": 75,
            "monitors": [
                latency_monitor(
                    threshold_factor=2.5,
                    minimum_excess="0.005s",
                    minimum_hosts=4,
                    request_volume=10,
                    enforcing=50,
                )
            ],
        }
    )
    assert valid(doc).outlier_detection == OutlierDetection(
        consecutive_5xx=3,
        consecutive_gateway_failure=4,
        consecutive_local_origin_failure=6,
        split_external_local_origin_errors=True,
        always_eject_one_host=True,
        interval=2.0,
        base_ejection_time=10.0,
        max_ejection_time=60.0,
        max_ejection_percent=50,
        enforcing_consecutive_5xx=90,
        enforcing_consecutive_gateway_failure=80,
        enforcing_consecutive_local_origin_failure=70,
        enforcing_success_rate=60,
        enforcing_local_origin_success_rate=50,
        success_rate_minimum_hosts=3,
        success_rate_request_volume=20,
        success_rate_stdev_factor=1500,
        enforcing_failure_percentage=40,
        enforcing_failure_percentage_local_origin=30,
        failure_percentage_minimum_hosts=2,
        failure_percentage_request_volume=10,
        failure_percentage_threshold=75,
        latency=LatencyEjection(2.5, 0.005, 4, 10, 50),
    )


def test_latency_monitor_defaults_and_numeric_seconds() -> None:
    defaults = valid(cluster(outlier_detection={"monitors": [latency_monitor()]}))
    assert defaults.outlier_detection is not None
    assert defaults.outlier_detection.latency == LatencyEjection()
    seconds = valid(cluster(outlier_detection={"monitors": [latency_monitor(minimum_excess=0.02)]}))
    assert seconds.outlier_detection is not None
    assert seconds.outlier_detection.latency == LatencyEjection(minimum_excess=0.02)


def test_max_ejection_time_defaults_to_base_when_base_is_longer() -> None:
    result = valid(cluster(outlier_detection={"base_ejection_time": "600s"}))
    assert result.outlier_detection is not None
    assert result.outlier_detection.max_ejection_time == 600.0


@pytest.mark.parametrize(
    ("detection", "expected"),
    [
        pytest.param(
            {"max_ejection_percent": 101, "enforcing_success_rate": 200, "failure_percentage_threshold": 101},
            [
                f"{OD}.max_ejection_percent: 101 is out of range; use 0..100",
                f"{OD}.enforcing_success_rate: 200 is out of range; use 0..100",
                f"{OD}.failure_percentage_threshold: 101 is out of range; use 0..100",
            ],
            id="percentages",
        ),
        pytest.param(
            {"interval": "0s", "base_ejection_time": "0s"},
            [f"{OD}.interval: must be greater than 0", f"{OD}.base_ejection_time: must be greater than 0"],
            id="zero-times",
        ),
        pytest.param(
            {"base_ejection_time": "30s", "max_ejection_time": "10s"},
            [f"{OD}.max_ejection_time: 10s is less than base_ejection_time (30s)"],
            id="max-below-base",
        ),
        pytest.param(
            {
                "monitors": [
                    {
                        "name": "m",
                        "typed_config": {"@type": TYPED_STRUCT, "type_url": "type.googleapis.com/x.Other"},
                    }
                ]
            },
            [
                f'{OD}.monitors[0].typed_config: monitor "x.Other" is not supported; use an xds.type.v3.TypedStruct '
                "with type_url type.googleapis.com/meshproxy.outlier.v1.LatencyEjection"
            ],
            id="other-monitor",
        ),
        pytest.param(
            {"monitors": [{"name": "envoy.outlier_detection_monitors.consecutive_errors"}]},
            [
                f'{OD}.monitors[0].typed_config: monitor "envoy.outlier_detection_monitors.consecutive_errors" is not '
                "supported; use an xds.type.v3.TypedStruct with type_url type.googleapis.com/meshproxy.outlier.v1.LatencyEjection"
            ],
            id="untyped-monitor",
        ),
        pytest.param(
            {
                "monitors": [
                    latency_monitor(
                        threshold_factor=1,
                        minimum_excess="fast",
                        minimum_hosts=0,
                        request_volume=2.5,
                        enforcing=101,
                        threshold=3,
                    )
                ]
            },
            [
                f"{OD}.monitors[0].typed_config.value.threshold: is not a field of meshproxy.outlier.v1.LatencyEjection; "
                "use threshold_factor, minimum_excess, minimum_hosts, request_volume, enforcing",
                f"{OD}.monitors[0].typed_config.value.threshold_factor: 1.0 must be a number greater than 1",
                f"{OD}.monitors[0].typed_config.value.minimum_excess: 'fast' is not a duration; give seconds as a number or a string like \"0.010s\"",
                f"{OD}.monitors[0].typed_config.value.minimum_hosts: must be at least 1",
                f"{OD}.monitors[0].typed_config.value.request_volume: 2.5 must be a non-negative integer",
                f"{OD}.monitors[0].typed_config.value.enforcing: 101 is out of range; use 0..100",
            ],
            id="latency-values",
        ),
    ],
)
def test_outlier_detection_rejections(detection: dict[str, Any], expected: list[str]) -> None:
    assert compiled(cluster(outlier_detection=detection))[1] == expected


# --------------------------------------------------------------------------- health checks


def test_health_checks_http_tcp_grpc() -> None:
    checks = [
        check(
            http_health_check={
                "path": "/healthz",
                "host": "svc.local",
                "expected_statuses": [{"start": 200, "end": 300}, {"start": 404, "end": 405}],
            },
            interval_jitter="0.5s",
            interval_jitter_percent=10,
            no_traffic_interval="30s",
        ),
        check(
            tcp_health_check={"send": {"text": "50494E47"}, "receive": [{"text": "504f"}, {"binary": "Tkc="}]}
        ),
        check(tcp_health_check={}),
        check(grpc_health_check={"service_name": "pkg.Svc", "authority": "svc"}),
    ]
    assert valid(cluster(health_checks=checks)).health_checks == (
        HealthCheck(
            "http",
            1.0,
            5.0,
            3,
            2,
            interval_jitter=0.5,
            interval_jitter_percent=10,
            no_traffic_interval=30.0,
            http_path="/healthz",
            http_host="svc.local",
            expected_statuses=((200, 300), (404, 405)),
        ),
        HealthCheck("tcp", 1.0, 5.0, 3, 2, tcp_send=b"PING", tcp_receive=(b"PO", b"NG")),
        HealthCheck("tcp", 1.0, 5.0, 3, 2),
        HealthCheck("grpc", 1.0, 5.0, 3, 2, grpc_service_name="pkg.Svc", grpc_authority="svc"),
    )


def test_http_health_check_expects_200_by_default() -> None:
    result = valid(cluster(health_checks=[check(http_health_check={"path": "/"})]))
    assert result.health_checks[0].expected_statuses == ((200, 201),)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param(
            check(),
            [f"{HC0}: a health check needs one of http_health_check, tcp_health_check or grpc_health_check"],
            id="no-checker",
        ),
        pytest.param(
            check(custom_health_check={"name": "x"}),
            [
                f"{HC0}.custom_health_check: is not supported; use http_health_check, tcp_health_check or grpc_health_check"
            ],
            id="custom",
        ),
        pytest.param(
            check(
                timeout=None,
                interval="0s",
                unhealthy_threshold=None,
                healthy_threshold=None,
                tcp_health_check={},
            ),
            [
                f"{HC0}.timeout: is required",
                f"{HC0}.interval: must be greater than 0",
                f"{HC0}.unhealthy_threshold: is required",
                f"{HC0}.healthy_threshold: is required",
            ],
            id="required",
        ),
        pytest.param(
            check(http_health_check={"path": ""}),
            [f'{HC0}.http_health_check.path: is required (e.g. "/healthz")'],
            id="no-path",
        ),
        pytest.param(
            check(http_health_check={"path": "health"}),
            [
                f'{HC0}.http_health_check.path: "health" must start with "/" and hold no spaces or control characters'
            ],
            id="relative-path",
        ),
        pytest.param(
            check(
                http_health_check={
                    "path": "/",
                    "codec_client_type": "HTTP2",
                    "expected_statuses": [{"start": 200, "end": 200}],
                }
            ),
            [
                f"{HC0}.http_health_check.codec_client_type: HTTP2 is not supported; HTTP health checks use HTTP1",
                f"{HC0}.http_health_check.expected_statuses[0]: [200, 200) is not a status range; use 100 <= start < end <= 600",
            ],
            id="codec-and-range",
        ),
        pytest.param(
            check(tcp_health_check={"send": {"text": "PING"}, "receive": [{}]}),
            [
                f'{HC0}.tcp_health_check.send.text: "PING" is not hex; text payloads are hex-encoded, e.g. "000000FF"',
                f"{HC0}.tcp_health_check.receive[0]: a payload needs text (hex) or binary",
            ],
            id="payloads",
        ),
        pytest.param(
            check(tcp_health_check={}, no_traffic_interval="0s"),
            [f"{HC0}.no_traffic_interval: must be greater than 0"],
            id="no-traffic-interval",
        ),
    ],
)
def test_health_check_rejections(entry: dict[str, Any], expected: list[str]) -> None:
    assert compiled(cluster(health_checks=[entry]))[1] == expected


# --------------------------------------------------------------------------- EDS


def test_eds_cluster_has_no_localities_and_names_its_resource() -> None:
    ads = valid(
        cluster(type="EDS", eds_cluster_config={"eds_config": {"ads": {}}, "service_name": "reviews.v1"})
    )
    assert (ads.discovery, ads.localities, ads.eds_service_name) == ("EDS", (), "reviews.v1")
    own_name = valid(cluster(type="EDS", eds_cluster_config={"eds_config": {"self": {}}}))
    assert own_name.eds_service_name == "c"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {}, ["c.eds_cluster_config: is required for type EDS; give eds_config {ads: {}}"], id="no-config"
        ),
        pytest.param(
            {"eds_cluster_config": {}},
            ["c.eds_cluster_config.eds_config: needs ads or self (endpoints come over the ADS stream)"],
            id="no-source",
        ),
        pytest.param(
            {"eds_cluster_config": {"eds_config": {"path_config_source": {"path": "/eds.yaml"}}}},
            [
                "c.eds_cluster_config.eds_config.path_config_source: is not supported; use ads or self (endpoints "
                "come over the ADS stream)"
            ],
            id="file-source",
        ),
        pytest.param(
            {
                "eds_cluster_config": {"eds_config": {"ads": {}}},
                "load_assignment": {"endpoints": [{"lb_endpoints": []}]},
            },
            [
                "c.load_assignment.endpoints: an EDS cluster's endpoints come from EDS; remove them or use type STATIC"
            ],
            id="static-endpoints",
        ),
    ],
)
def test_eds_rejections(fields: dict[str, Any], expected: list[str]) -> None:
    assert compiled(cluster(type="EDS", **fields))[1] == expected


def assignment(doc: dict[str, Any]) -> tuple[tuple[LocalityLbEndpoints, ...], int, list[str]]:
    problems: list[str] = []
    msg = json_format.ParseDict(doc, endpoint_pb2.ClusterLoadAssignment())
    localities, factor = compile_load_assignment(msg, "cla", problems)
    return localities, factor, problems


def test_compile_load_assignment_for_eds() -> None:
    doc = {
        "cluster_name": "reviews.v1",
        "endpoints": [
            {
                "locality": {"region": "eu", "zone": "a"},
                "load_balancing_weight": 3,
                "priority": 1,
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {"socket_address": {"address": "10.1.0.5", "port_value": 9080}},
                            "hostname": "reviews-0",
                        },
                        "health_status": "DRAINING",
                        "load_balancing_weight": 2,
                    }
                ],
            }
        ],
        "policy": {"overprovisioning_factor": 200},
    }
    localities, factor, problems = assignment(doc)
    assert problems == []
    assert factor == 200
    assert localities == (
        LocalityLbEndpoints(
            Locality("eu", "a"),
            (Endpoint(SocketAddress("10.1.0.5", 9080), 2, "DRAINING", "reviews-0"),),
            weight=3,
            priority=1,
        ),
    )
    assert assignment({"cluster_name": "x"}) == ((), 140, [])


def test_compile_load_assignment_wants_ip_addresses() -> None:
    doc = {
        "endpoints": [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "reviews", "port_value": 1}}}}
                ]
            }
        ]
    }
    assert assignment(doc)[2] == [
        'cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: "reviews" is not an IP address; '
        "EDS endpoints must be IP addresses"
    ]


def test_static_endpoint_hostname() -> None:
    doc = cluster(
        load_assignment={
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": "10.0.0.1", "port_value": 80}},
                                "hostname": "a",
                            }
                        }
                    ]
                }
            ]
        }
    )
    assert valid(doc).localities[0].endpoints[0].hostname == "a"


def test_the_documented_latency_monitor_loads_from_a_bootstrap() -> None:
    """The YAML of docs/configuration.md, through the file loader (which resolves each @type)."""
    text = """
static_resources:
  clusters:
  - name: c
    outlier_detection:
      consecutive_5xx: 5
      monitors:
      - name: meshproxy.outlier_detection_monitors.latency
        typed_config:
          "@type": type.googleapis.com/xds.type.v3.TypedStruct
          type_url: type.googleapis.com/meshproxy.outlier.v1.LatencyEjection
          value:
            threshold_factor: 3.0
            minimum_excess: 0.010s
            minimum_hosts: 3
            request_volume: 20
            enforcing: 100
"""
    detection = parse_bootstrap(text).clusters[0].outlier_detection
    assert detection is not None
    assert detection.latency == LatencyEjection(3.0, 0.010, 3, 20, 100)
