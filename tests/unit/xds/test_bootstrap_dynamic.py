"""Bootstrap ``dynamic_resources``: the shapes accepted, and each rejection with its field path."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.config.model import DynamicResources
from meshproxy.errors import ConfigError

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

DOC: dict[str, Any] = {
    "node": {"id": "n", "cluster": "web"},
    "static_resources": {
        "clusters": [
            {
                "name": "xds",
                "type": "STATIC",
                "load_assignment": {
                    "cluster_name": "xds",
                    "endpoints": [
                        {
                            "lb_endpoints": [
                                {
                                    "endpoint": {
                                        "address": {
                                            "socket_address": {"address": "127.0.0.1", "port_value": 15010}
                                        }
                                    }
                                }
                            ]
                        }
                    ],
                },
            }
        ]
    },
    "dynamic_resources": {
        "ads_config": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
        },
        "lds_config": {"ads": {}, "resource_api_version": "V3"},
        "cds_config": {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "3s"},
    },
}


def doc_with(**dynamic: Any) -> dict[str, Any]:
    doc = copy.deepcopy(DOC)
    for key, value in dynamic.items():
        if value is None:
            del doc["dynamic_resources"][key]
        else:
            doc["dynamic_resources"][key] = value
    return doc


def problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_bootstrap(json.dumps(doc))
    return raised.value.problems


@pytest.mark.parametrize(("api_type", "is_delta"), [("GRPC", False), ("DELTA_GRPC", True)])
def test_ads_over_a_static_cluster_is_accepted(api_type: str, is_delta: bool) -> None:
    doc = doc_with()
    doc["dynamic_resources"]["ads_config"]["api_type"] = api_type
    config = parse_bootstrap(json.dumps(doc))
    assert config.dynamic == DynamicResources(
        "xds", delta=is_delta, lds=True, cds=True, initial_fetch_timeout=3.0
    )


def test_static_listeners_may_route_to_clusters_that_cds_will_bring() -> None:
    doc = doc_with()
    doc["static_resources"]["listeners"] = [_listener({"route_config": _routes("later")})]
    config = parse_bootstrap(json.dumps(doc))
    assert [ln.name for ln in config.listeners] == ["l"]
    doc["dynamic_resources"].pop("cds_config")
    assert any('unknown cluster "later"' in p for p in problems(doc))


A = "dynamic_resources.ads_config"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            {"ads_config": {"api_type": "REST", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]}},
            f"{A}.api_type: REST is not supported; use GRPC or DELTA_GRPC",
            id="rest",
        ),
        pytest.param(
            {
                "ads_config": {
                    "api_type": "GRPC",
                    "grpc_services": [{"google_grpc": {"target_uri": "cp:15010"}}],
                }
            },
            f"{A}.grpc_services[0]: only envoy_grpc is supported (google_grpc is not)",
            id="google-grpc",
        ),
        pytest.param(
            {"ads_config": {"api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "cp"}}]}},
            f'{A}.grpc_services[0].envoy_grpc.cluster_name: "cp" is not a static cluster '
            "(static clusters: xds)",
            id="unknown-cluster",
        ),
        pytest.param(
            {"ads_config": None},
            f"{A}: is required: api_type GRPC or DELTA_GRPC with one envoy_grpc service",
            id="no-ads",
        ),
        pytest.param(
            {"lds_config": {"path_config_source": {"path": "/etc/lds.yaml"}}},
            "dynamic_resources: lds_config and cds_config must both come over ADS or both from files "
            "(path_config_source); meshproxy does not mix them",
            id="lds-path-cds-ads",
        ),
        pytest.param(
            {
                "lds_config": {"path_config_source": {"path": "/etc/lds.yaml"}},
                "cds_config": {"path_config_source": {"path": "/etc/cds.yaml"}},
            },
            f"{A}: is not used when listeners and clusters come from files; remove it",
            id="files-and-ads",
        ),
        pytest.param(
            {
                "ads_config": None,
                "lds_config": {
                    "path_config_source": {"path": "/etc/lds.yaml", "watched_directory": {"path": "/etc"}}
                },
                "cds_config": {"path": "/etc/cds.yaml"},
            },
            "dynamic_resources.lds_config.path_config_source.watched_directory: is not supported: meshproxy "
            "notices a replaced file itself (it polls the path every second)",
            id="watched-directory",
        ),
        pytest.param(
            {"cds_config": {"api_config_source": {"api_type": "GRPC"}}},
            "dynamic_resources.cds_config.api_config_source: must be {ads: {}} (listeners and clusters over "
            "the ADS stream) or {path_config_source: {path: …}} (from a file)",
            id="cds-own-stream",
        ),
        pytest.param(
            {"cds_resources_locator": "xdstp://cp/envoy.config.cluster.v3.Cluster/*"},
            "dynamic_resources.cds_resources_locator: xdstp:// resource locators are not supported; "
            "use ads: {}",
            id="xdstp",
        ),
    ],
)
def test_unsupported_shapes_are_rejected_with_their_path(change: dict[str, Any], expected: str) -> None:
    assert problems(doc_with(**change)) == [expected]


def test_a_static_listener_with_rds_is_rejected() -> None:
    doc = doc_with()
    doc["static_resources"]["listeners"] = [
        _listener({"rds": {"config_source": {"ads": {}}, "route_config_name": "main"}})
    ]
    assert problems(doc) == [
        'static_resources.listeners[0]: routes over RDS ("main") are only supported for listeners delivered '
        "over LDS; give a static listener an inline route_config"
    ]


def _routes(cluster: str) -> dict[str, Any]:
    route = {"match": {"prefix": "/"}, "route": {"cluster": cluster}}
    return {"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]}


def _listener(routes: dict[str, Any]) -> dict[str, Any]:
    typed = {
        "@type": HCM,
        "stat_prefix": "l",
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
        **routes,
    }
    return {
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": typed}]}],
    }


def test_listeners_and_clusters_from_files() -> None:
    doc = doc_with(
        ads_config=None,
        lds_config={"path_config_source": {"path": "/etc/envoy/lds.yaml"}},
        cds_config={"path": "/etc/envoy/cds.yaml"},  # Envoy's deprecated form, still read
    )
    dynamic = parse_bootstrap(json.dumps(doc)).dynamic
    assert dynamic is not None
    assert (dynamic.ads_cluster, dynamic.lds_path, dynamic.cds_path) == (
        "",
        "/etc/envoy/lds.yaml",
        "/etc/envoy/cds.yaml",
    )
