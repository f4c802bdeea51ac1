"""`controlplane.xds.snapshot`: the consistency check, resource versions and the pre-serialised
wire pieces; `controlplane.xds.resource_file`: raw resource files and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import discovery_pb2
from xds_resources import endpoints, service_resources, service_snapshot

from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Snapshot, load_resource_file
from controlplane.xds.resource_file import parse_resources
from meshproxy.errors import ConfigError


def test_type_urls_are_the_v3_ones() -> None:
    assert LISTENER == "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert ROUTE == "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    assert CLUSTER == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    assert ENDPOINT == "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    assert SECRET == "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def test_a_consistent_snapshot_has_no_problems() -> None:
    snap = service_snapshot("1", "greeter", {"a": 80, "b": 20}, {"a": [1], "b": [2]})
    assert snap.check() == []


def test_check_names_every_dangling_reference() -> None:
    resources = service_resources("greeter", {"a": 80, "b": 20}, {"a": [1], "b": [2]})
    del resources[CLUSTER]["b"]  # the route's split names b
    del resources[ENDPOINT]["a"]  # EDS cluster a without its endpoints
    resources[LISTENER]["other"] = service_resources("other", {"a": 1}, {"a": [1]})[LISTENER]["other"]
    problems = Snapshot("1", resources).check()
    assert any(
        "route configuration 'greeter-route'" in p and "cluster 'b' has no Cluster" in p for p in problems
    )
    assert any("cluster 'a': EDS service 'a' has no ClusterLoadAssignment" in p for p in problems)
    assert any(
        "listener 'other': api_listener: rds route_config_name 'other-route' has no RouteConfiguration" in p
        for p in problems
    )
    assert len(problems) == 3


def test_check_reports_wrong_types_names_and_non_messages() -> None:
    snap = Snapshot(
        "1",
        {
            CLUSTER: {"x": listener_pb2.Listener(name="x"), "y": cluster_pb2.Cluster(name="z"), "w": "text"},
        },
    )
    problems = snap.check()
    assert len(problems) == 3
    assert any("['x']" in p and "is not a" in p for p in problems)
    assert any("['y']" in p and "named 'z'" in p for p in problems)
    assert any("['w']" in p and "not a protobuf message" in p for p in problems)


def test_resource_versions_follow_content_only() -> None:
    one = service_snapshot("1", "g", {"a": 1}, {"a": [1]})
    two = service_snapshot("2", "g", {"a": 1}, {"a": [2]})
    assert one.resource_version(CLUSTER, "a") == two.resource_version(CLUSTER, "a")
    assert one.resource_version(ENDPOINT, "a") != two.resource_version(ENDPOINT, "a")
    assert one.resource_version(ENDPOINT, "missing") is None
    assert one.encoded(LISTENER).fingerprint == two.encoded(LISTENER).fingerprint
    assert one.encoded(ENDPOINT).fingerprint != two.encoded(ENDPOINT).fingerprint


def test_pre_serialised_pieces_concatenate_into_responses() -> None:
    snap = service_snapshot("7", "g", {"a": 1, "b": 1}, {"b": [2], "a": [1]})
    enc = snap.encoded(ENDPOINT)
    head = discovery_pb2.DiscoveryResponse(version_info="7", type_url=ENDPOINT, nonce="3")
    parsed = discovery_pb2.DiscoveryResponse.FromString(head.SerializeToString() + enc.all_sotw)
    assert (parsed.version_info, parsed.nonce) == ("7", "3")
    assert [r.type_url for r in parsed.resources] == [ENDPOINT, ENDPOINT]
    assert [r.value for r in parsed.resources] == [
        endpoints("a", [1]).SerializeToString(deterministic=True),
        endpoints("b", [2]).SerializeToString(deterministic=True),
    ]
    delta = discovery_pb2.DeltaDiscoveryResponse.FromString(enc.delta["b"])
    assert delta.resources[0].name == "b"
    assert delta.resources[0].version == snap.resource_version(ENDPOINT, "b")


# --------------------------------------------------------------------------- resource files


def test_resource_file_json_object_and_yaml_list(tmp_path: Path) -> None:
    entries = [
        {"@type": ROUTE, "name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"]}]},
        {"@type": "envoy.config.endpoint.v3.ClusterLoadAssignment", "cluster_name": "c"},
        {
            "@type": LISTENER,
            "name": "l",
            "api_listener": {
                "api_listener": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network."
                    "http_connection_manager.v3.HttpConnectionManager",
                    "rds": {"route_config_name": "r", "config_source": {"ads": {}}},
                }
            },
        },
    ]
    as_json = tmp_path / "r.json"
    as_json.write_text(json.dumps({"resources": entries}))
    as_yaml = tmp_path / "r.yaml"
    as_yaml.write_text(yaml.safe_dump(entries))
    for path in (as_json, as_yaml):
        resources = load_resource_file(path)
        assert sorted(resources) == sorted([ROUTE, ENDPOINT, LISTENER])
        assert resources[ROUTE]["r"].virtual_hosts[0].domains == ["*"]
        assert resources[ENDPOINT]["c"].cluster_name == "c"
        assert resources[LISTENER]["l"].api_listener.api_listener.type_url.endswith("HttpConnectionManager")


def test_resource_file_errors_name_the_entry_and_field() -> None:
    text = json.dumps(
        [
            {"@type": CLUSTER, "name": "a", "conect_timeout": "1s"},
            {"@type": CLUSTER, "name": "b"},
            {"@type": CLUSTER, "name": "b"},
            {"name": "no-type"},
            {"@type": "type.googleapis.com/foo.Bar", "name": "x"},
            {"@type": CLUSTER},
            "text",
        ]
    )
    with pytest.raises(ConfigError) as err:
        parse_resources(text, source="f.json")
    problems = err.value.problems
    assert len(problems) == 6, problems
    assert problems[0].startswith("f.json: resources[0] (Cluster): ") and "conect_timeout" in problems[0]
    assert problems[1] == "f.json: resources[2] (Cluster): name: 'b' is defined twice"
    assert problems[2].startswith("f.json: resources[3]: @type: required")
    assert problems[3].startswith("f.json: resources[4]: @type: 'type.googleapis.com/foo.Bar' is not one of")
    assert problems[4] == "f.json: resources[5] (Cluster): name: required"
    assert problems[5] == "f.json: resources[6]: must be a mapping with '@type', not a str"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{", "f.json:1:2: JSON syntax error"),
        ("a: [", "f.yaml:"),
        ('{"resources": [], "extra": 1}', "unknown top-level key(s) ['extra']"),
        ("42", "expected a list of resources"),
    ],
)
def test_resource_file_document_errors(text: str, expected: str) -> None:
    source = "f.json" if text.startswith(("{", "4")) else "f.yaml"
    with pytest.raises(ConfigError) as err:
        parse_resources(text, source=source)
    assert expected in err.value.problems[0]


def test_resource_file_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the resource file"):
        load_resource_file(tmp_path / "missing.yaml")


def test_empty_resource_file_is_no_resources() -> None:
    assert parse_resources("resources: []\n", source="f.yaml") == {}
    assert parse_resources("# nothing\n", source="f.yaml") == {}
