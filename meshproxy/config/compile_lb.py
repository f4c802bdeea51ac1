"""Compiles a Cluster's load-balancing choice into ``policy.LbConfig``.

Owns ``lb_policy`` with its per-policy configs (``least_request_lb_config``,
``ring_hash_lb_config``, ``maglev_lb_config``), the typed ``load_balancing_policy``
(envoy.extensions.load_balancing_policies.*.v3; the first supported entry wins, as in Envoy),
and ``common_lb_config``. The overprovisioning factor comes from the load assignment and is set by
``compile_cluster``. Must not depend on the listener, route or cluster compilers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from google.protobuf.message import Message

from meshproxy.config.compile_common import Ctx, enum_name, type_url, unpack, wrapped
from meshproxy.config.policy import DEFAULT_LB, LbConfig, LbPolicy

_POLICIES = "ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV"
_ENUM_POLICIES: dict[int, LbPolicy] = {
    cluster_pb2.Cluster.ROUND_ROBIN: "ROUND_ROBIN",
    cluster_pb2.Cluster.LEAST_REQUEST: "LEAST_REQUEST",
    cluster_pb2.Cluster.RANDOM: "RANDOM",
    cluster_pb2.Cluster.RING_HASH: "RING_HASH",
    cluster_pb2.Cluster.MAGLEV: "MAGLEV",
}
_MAX_RING_SIZE = 8 * 1024 * 1024  # Envoy's bound on minimum/maximum_ring_size
_MAX_MAGLEV_TABLE = 5000011  # Envoy's bound on maglev table_size


def lb_config(msg: cluster_pb2.Cluster, ctx: Ctx) -> LbConfig:
    """The cluster's LbConfig (overprovisioning_factor left at its default)."""
    fields: dict[str, Any] = {}
    if msg.HasField("load_balancing_policy"):
        # Envoy uses the typed policy when it is given and ignores lb_policy and *_lb_config.
        fields = _typed_policy(msg.load_balancing_policy, ctx.at("load_balancing_policy"))
    elif msg.lb_policy in _ENUM_POLICIES:
        policy = _ENUM_POLICIES[msg.lb_policy]
        fields = {"policy": policy}
        if policy == "LEAST_REQUEST" and msg.HasField("least_request_lb_config"):
            fields |= _least_request(msg.least_request_lb_config, ctx.at("least_request_lb_config"))
        elif policy == "RING_HASH" and msg.HasField("ring_hash_lb_config"):
            fields |= _ring_hash(msg.ring_hash_lb_config, ctx.at("ring_hash_lb_config"))
        elif policy == "MAGLEV" and msg.HasField("maglev_lb_config"):
            fields |= _maglev(msg.maglev_lb_config, ctx.at("maglev_lb_config"))
    elif msg.lb_policy == cluster_pb2.Cluster.LOAD_BALANCING_POLICY_CONFIG:
        ctx.at("lb_policy").problem("LOAD_BALANCING_POLICY_CONFIG needs load_balancing_policy to be set")
    else:
        ctx.at("lb_policy").problem(f"{enum_name(msg, 'lb_policy')} is not supported; use {_POLICIES}")
    if msg.HasField("common_lb_config"):
        fields |= _common(msg.common_lb_config, ctx.at("common_lb_config"))
    return dataclasses.replace(DEFAULT_LB, **fields) if fields else DEFAULT_LB


def _common(msg: cluster_pb2.Cluster.CommonLbConfig, ctx: Ctx) -> dict[str, Any]:
    """healthy_panic_threshold and locality_weighted_lb_config; zone_aware_lb_config and the
    rest are ignored (meshproxy does not route by zone)."""
    fields: dict[str, Any] = {}
    if msg.HasField("healthy_panic_threshold"):
        fields["panic_threshold"] = percent(
            msg.healthy_panic_threshold.value, ctx.at("healthy_panic_threshold")
        )
    if msg.HasField("locality_weighted_lb_config"):
        fields["locality_weighted"] = True
    return fields


def percent(value: float, ctx: Ctx) -> float:
    """An envoy.type.v3.Percent value, which must lie in 0..100."""
    if not 0.0 <= value <= 100.0:
        ctx.at("value").problem(f"{value:g} is out of range; use 0..100")
    return value


# --------------------------------------------------------------------------- per-policy configs
# The cluster-level configs and the typed extensions share field names, so one reader serves both.


def _least_request(msg: Message, ctx: Ctx) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if msg.HasField("choice_count"):
        choice_count = msg.choice_count.value
        if choice_count < 2:
            ctx.at("choice_count").problem(f"{choice_count} is too small; use at least 2")
        fields["choice_count"] = choice_count
    if msg.HasField("active_request_bias"):
        bias = msg.active_request_bias.default_value
        if bias < 0:
            ctx.at("active_request_bias").at("default_value").problem(f"{bias:g} must not be negative")
        fields["active_request_bias"] = bias
    return fields


def _ring_hash(msg: Message, ctx: Ctx) -> dict[str, Any]:
    # XX_HASH is 0 on the cluster field and 1 in the typed RingHash (where DEFAULT_HASH is xxHash).
    if enum_name(msg, "hash_function") not in ("XX_HASH", "DEFAULT_HASH"):
        ctx.at("hash_function").problem(f"{enum_name(msg, 'hash_function')} is not supported; use XX_HASH")
    minimum = wrapped(msg, "minimum_ring_size", DEFAULT_LB.minimum_ring_size)
    maximum = wrapped(msg, "maximum_ring_size", DEFAULT_LB.maximum_ring_size)
    for name, size in (("minimum_ring_size", minimum), ("maximum_ring_size", maximum)):
        if not 1 <= size <= _MAX_RING_SIZE:
            ctx.at(name).problem(f"{size} is out of range; use 1..{_MAX_RING_SIZE}")
    if minimum > maximum:
        ctx.at("minimum_ring_size").problem(f"{minimum} is larger than maximum_ring_size ({maximum})")
    return {"minimum_ring_size": minimum, "maximum_ring_size": maximum}


def _maglev(msg: Message, ctx: Ctx) -> dict[str, Any]:
    size = wrapped(msg, "table_size", DEFAULT_LB.maglev_table_size)
    if not _is_prime(size) or size > _MAX_MAGLEV_TABLE:
        ctx.at("table_size").problem(f"{size} must be a prime number no larger than {_MAX_MAGLEV_TABLE}")
    return {"maglev_table_size": size}


def _is_prime(n: int) -> bool:
    """Trial division: the table size is at most about 5 million, so at most ~1100 divisions."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    divisor = 3
    while divisor * divisor <= n:
        if n % divisor == 0:
            return False
        divisor += 2
    return True


# --------------------------------------------------------------------------- typed policies


def _locality_weighted(msg: Message) -> dict[str, Any]:
    """RoundRobin/LeastRequest/Random carry locality_lb_config (a oneof), RingHash/Maglev
    carry locality_weighted_lb_config directly."""
    if msg.DESCRIPTOR.fields_by_name.get("locality_lb_config") is not None:
        config = msg.locality_lb_config
        if config.WhichOneof("locality_config_specifier") == "locality_weighted_lb_config":
            return {"locality_weighted": True}
    elif msg.HasField("locality_weighted_lb_config"):
        return {"locality_weighted": True}
    return {}


def _no_options(msg: Message, ctx: Ctx) -> dict[str, Any]:
    return {}


_TYPED: dict[str, tuple[LbPolicy, type[Message], Callable[[Any, Ctx], dict[str, Any]]]] = {
    type_url(round_robin_pb2.RoundRobin): ("ROUND_ROBIN", round_robin_pb2.RoundRobin, _no_options),
    type_url(least_request_pb2.LeastRequest): (
        "LEAST_REQUEST",
        least_request_pb2.LeastRequest,
        _least_request,
    ),
    type_url(random_pb2.Random): ("RANDOM", random_pb2.Random, _no_options),
    type_url(ring_hash_pb2.RingHash): ("RING_HASH", ring_hash_pb2.RingHash, _ring_hash),
    type_url(maglev_pb2.Maglev): ("MAGLEV", maglev_pb2.Maglev, _maglev),
}


def _typed_policy(msg: cluster_pb2.LoadBalancingPolicy, ctx: Ctx) -> dict[str, Any]:
    """The first entry of ``policies`` meshproxy supports, as Envoy picks the first it knows."""
    if not msg.policies:
        ctx.at("policies").problem("needs at least one policy")
        return {}
    for entry, c in ctx.each("policies", msg.policies):
        typed_config = entry.typed_extension_config.typed_config
        known = _TYPED.get(typed_config.type_url)
        if known is None:
            continue
        policy, message_class, options = known
        config = unpack(typed_config, message_class)
        return (
            {"policy": policy}
            | options(config, c.at("typed_extension_config").at("typed_config"))
            | _locality_weighted(config)
        )
    urls = ", ".join(f'"{e.typed_extension_config.typed_config.type_url}"' for e in msg.policies)
    ctx.at("policies").problem(
        f"none of {urls} is supported; use one of envoy.extensions.load_balancing_policies."
        "{round_robin,least_request,random,ring_hash,maglev}.v3"
    )
    return {}
