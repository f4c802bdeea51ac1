"""compile_cluster's load balancing: lb_policy and its configs, the typed load_balancing_policy,
common_lb_config and the load assignment's overprovisioning factor."""

# ruff: noqa: E501 (the tables hold whole expected messages; splitting them hides what users read)

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2

# Policies meshproxy does not run, imported so that their @type parses (the bootstrap loader
# imports them on demand).
from envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3 import (  # noqa: F401
    client_side_weighted_round_robin_pb2,
)
from envoy.extensions.load_balancing_policies.pick_first.v3 import pick_first_pb2  # noqa: F401
from google.protobuf import json_format

from meshproxy.config.compile import compile_cluster
from meshproxy.config.model import Cluster
from meshproxy.config.policy import DEFAULT_LB, LbConfig

POLICIES = "type.googleapis.com/envoy.extensions.load_balancing_policies"
POLICY_LIST = (
    "envoy.extensions.load_balancing_policies.{round_robin,least_request,random,ring_hash,maglev}.v3"
)


def cluster(**fields: Any) -> dict[str, Any]:
    return {"name": "c", "type": "STATIC"} | fields


def typed(*configs: dict[str, Any]) -> dict[str, Any]:
    """A load_balancing_policy listing ``configs`` (each a typed_config) in order."""
    return {
        "load_balancing_policy": {
            "policies": [
                {"typed_extension_config": {"name": f"p{i}", "typed_config": c}}
                for i, c in enumerate(configs)
            ]
        }
    }


def compiled(doc: dict[str, Any]) -> tuple[Cluster | None, list[str]]:
    problems: list[str] = []
    result = compile_cluster(json_format.ParseDict(doc, cluster_pb2.Cluster()), "c", problems)
    assert (result is None) == bool(problems), "a cluster is returned exactly when there is no problem"
    return result, problems


def lb_of(doc: dict[str, Any]) -> LbConfig:
    result, problems = compiled(doc)
    assert problems == []
    assert result is not None
    return result.lb


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, DEFAULT_LB, id="default"),
        pytest.param({"lb_policy": "RANDOM"}, LbConfig("RANDOM"), id="random"),
        pytest.param({"lb_policy": "LEAST_REQUEST"}, LbConfig("LEAST_REQUEST"), id="least-request"),
        pytest.param(
            {
                "lb_policy": "LEAST_REQUEST",
                "least_request_lb_config": {
                    "choice_count": 5,
                    "active_request_bias": {"default_value": 0.5, "runtime_key": "k"},
                },
            },
            LbConfig("LEAST_REQUEST", choice_count=5, active_request_bias=0.5),
            id="least-request-config",
        ),
        pytest.param(
            {
                "lb_policy": "RING_HASH",
                "ring_hash_lb_config": {"minimum_ring_size": 64, "maximum_ring_size": 4096},
            },
            LbConfig("RING_HASH", minimum_ring_size=64, maximum_ring_size=4096),
            id="ring-hash-config",
        ),
        pytest.param({"lb_policy": "RING_HASH"}, LbConfig("RING_HASH"), id="ring-hash-defaults"),
        pytest.param(
            {"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 251}},
            LbConfig("MAGLEV", maglev_table_size=251),
            id="maglev-config",
        ),
        pytest.param(
            {"lb_policy": "MAGLEV"}, LbConfig("MAGLEV", maglev_table_size=65537), id="maglev-default"
        ),
        pytest.param(
            # A config for another policy is ignored, as in Envoy.
            {"lb_policy": "ROUND_ROBIN", "ring_hash_lb_config": {"minimum_ring_size": 0}},
            DEFAULT_LB,
            id="mismatched-config-ignored",
        ),
        pytest.param(
            {
                "common_lb_config": {
                    "healthy_panic_threshold": {"value": 0},
                    "locality_weighted_lb_config": {},
                    "update_merge_window": "1s",
                }
            },
            LbConfig(panic_threshold=0.0, locality_weighted=True),
            id="common",
        ),
        pytest.param(
            {"common_lb_config": {"zone_aware_lb_config": {"min_cluster_size": 3}}},
            DEFAULT_LB,
            id="zone-aware-ignored",
        ),
        pytest.param(
            {"load_assignment": {"cluster_name": "c", "policy": {"overprovisioning_factor": 100}}},
            LbConfig(overprovisioning_factor=100),
            id="overprovisioning",
        ),
    ],
)
def test_lb_policy_accepted(fields: dict[str, Any], expected: LbConfig) -> None:
    assert lb_of(cluster(**fields)) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"lb_policy": "CLUSTER_PROVIDED"},
            [
                "c.lb_policy: CLUSTER_PROVIDED is not supported; use ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV"
            ],
            id="cluster-provided",
        ),
        pytest.param(
            {"lb_policy": "LOAD_BALANCING_POLICY_CONFIG"},
            ["c.lb_policy: LOAD_BALANCING_POLICY_CONFIG needs load_balancing_policy to be set"],
            id="policy-config-without-policy",
        ),
        pytest.param(
            {
                "lb_policy": "LEAST_REQUEST",
                "least_request_lb_config": {"choice_count": 1, "active_request_bias": {"default_value": -1}},
            },
            [
                "c.least_request_lb_config.choice_count: 1 is too small; use at least 2",
                "c.least_request_lb_config.active_request_bias.default_value: -1 must not be negative",
            ],
            id="least-request",
        ),
        pytest.param(
            {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"hash_function": "MURMUR_HASH_2"}},
            ["c.ring_hash_lb_config.hash_function: MURMUR_HASH_2 is not supported; use XX_HASH"],
            id="murmur",
        ),
        pytest.param(
            {
                "lb_policy": "RING_HASH",
                "ring_hash_lb_config": {"minimum_ring_size": 0, "maximum_ring_size": 8388609},
            },
            [
                "c.ring_hash_lb_config.minimum_ring_size: 0 is out of range; use 1..8388608",
                "c.ring_hash_lb_config.maximum_ring_size: 8388609 is out of range; use 1..8388608",
            ],
            id="ring-bounds",
        ),
        pytest.param(
            {
                "lb_policy": "RING_HASH",
                "ring_hash_lb_config": {"minimum_ring_size": 4096, "maximum_ring_size": 1024},
            },
            ["c.ring_hash_lb_config.minimum_ring_size: 4096 is larger than maximum_ring_size (1024)"],
            id="ring-min-above-max",
        ),
        pytest.param(
            {"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 65536}},
            ["c.maglev_lb_config.table_size: 65536 must be a prime number no larger than 5000011"],
            id="maglev-not-prime",
        ),
        pytest.param(
            {"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 5000101}},
            ["c.maglev_lb_config.table_size: 5000101 must be a prime number no larger than 5000011"],
            id="maglev-prime-too-large",
        ),
        pytest.param(
            {"common_lb_config": {"healthy_panic_threshold": {"value": 101}}},
            ["c.common_lb_config.healthy_panic_threshold.value: 101 is out of range; use 0..100"],
            id="panic-threshold",
        ),
        pytest.param(
            {"load_assignment": {"policy": {"overprovisioning_factor": 0}}},
            ["c.load_assignment.policy.overprovisioning_factor: must be greater than 0"],
            id="overprovisioning",
        ),
        pytest.param(
            {
                "load_assignment": {
                    "policy": {"drop_overloads": [{"category": "x", "drop_percentage": {"numerator": 1}}]}
                }
            },
            [
                "c.load_assignment.policy.drop_overloads: is not supported; meshproxy does not drop requests by category"
            ],
            id="drop-overloads",
        ),
    ],
)
def test_lb_policy_rejected(fields: dict[str, Any], expected: list[str]) -> None:
    assert compiled(cluster(**fields))[1] == expected


# --------------------------------------------------------------------------- typed policies


@pytest.mark.parametrize(
    ("configs", "expected"),
    [
        pytest.param(
            [{"@type": f"{POLICIES}.round_robin.v3.RoundRobin"}], LbConfig("ROUND_ROBIN"), id="round-robin"
        ),
        pytest.param([{"@type": f"{POLICIES}.random.v3.Random"}], LbConfig("RANDOM"), id="random"),
        pytest.param(
            [
                {
                    "@type": f"{POLICIES}.least_request.v3.LeastRequest",
                    "choice_count": 3,
                    "active_request_bias": {"default_value": 2, "runtime_key": "b"},
                }
            ],
            LbConfig("LEAST_REQUEST", choice_count=3, active_request_bias=2.0),
            id="least-request",
        ),
        pytest.param(
            [
                {
                    "@type": f"{POLICIES}.ring_hash.v3.RingHash",
                    "hash_function": "XX_HASH",
                    "minimum_ring_size": 16,
                    "locality_weighted_lb_config": {},
                }
            ],
            LbConfig("RING_HASH", minimum_ring_size=16, locality_weighted=True),
            id="ring-hash",
        ),
        pytest.param(
            [{"@type": f"{POLICIES}.ring_hash.v3.RingHash"}],
            LbConfig("RING_HASH"),
            id="ring-hash-default-hash",
        ),
        pytest.param(
            [{"@type": f"{POLICIES}.maglev.v3.Maglev", "table_size": 65537}], LbConfig("MAGLEV"), id="maglev"
        ),
        pytest.param(
            [
                {
                    "@type": f"{POLICIES}.round_robin.v3.RoundRobin",
                    "locality_lb_config": {"locality_weighted_lb_config": {}},
                }
            ],
            LbConfig(locality_weighted=True),
            id="round-robin-locality-weighted",
        ),
        pytest.param(
            [
                {"@type": f"{POLICIES}.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin"},
                {"@type": f"{POLICIES}.maglev.v3.Maglev"},
                {"@type": f"{POLICIES}.random.v3.Random"},
            ],
            LbConfig("MAGLEV"),
            id="first-supported-wins",
        ),
    ],
)
def test_typed_policy_accepted(configs: list[dict[str, Any]], expected: LbConfig) -> None:
    # lb_policy is ignored when load_balancing_policy is given, as in Envoy.
    assert lb_of(cluster(lb_policy="LOAD_BALANCING_POLICY_CONFIG", **typed(*configs))) == expected


def test_typed_policy_rejections() -> None:
    unsupported = f"{POLICIES}.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin"
    pick_first = f"{POLICIES}.pick_first.v3.PickFirst"
    assert compiled(cluster(**typed({"@type": unsupported}, {"@type": pick_first})))[1] == [
        f'c.load_balancing_policy.policies: none of "{unsupported}", "{pick_first}" is supported; use one of {POLICY_LIST}'
    ]
    assert compiled(cluster(load_balancing_policy={"policies": []}))[1] == [
        "c.load_balancing_policy.policies: needs at least one policy"
    ]
    bad = typed(
        {"@type": f"{POLICIES}.pick_first.v3.PickFirst"},
        {"@type": f"{POLICIES}.maglev.v3.Maglev", "table_size": 10},
    )
    assert compiled(cluster(**bad))[1] == [
        "c.load_balancing_policy.policies[1].typed_extension_config.typed_config.table_size: 10 must be a prime "
        "number no larger than 5000011"
    ]
    murmur = typed({"@type": f"{POLICIES}.ring_hash.v3.RingHash", "hash_function": "MURMUR_HASH_2"})
    assert compiled(cluster(**murmur))[1] == [
        "c.load_balancing_policy.policies[0].typed_extension_config.typed_config.hash_function: MURMUR_HASH_2 is "
        "not supported; use XX_HASH"
    ]
