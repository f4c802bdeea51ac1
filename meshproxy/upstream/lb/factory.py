"""One picker per cluster host set, chosen by the cluster's LB policy.

Owns the :class:`Picker` interface every policy presents (``pick(hash) -> host index``) and
:func:`build_picker`, which maps an :class:`~meshproxy.config.policy.LbConfig` onto the pickers
of this package. Policies without a request hash (round robin, random, least request) ignore
``hash``; ring hash and Maglev use only ``hash``. A picker is immutable in its membership: the
caller builds a new one whenever hosts or weights change (least request reads ``rq_active``
live from the host objects it was given). Depends on the config's frozen ``LbConfig`` only;
must not import asyncio, sockets or protobuf.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from meshproxy.config.policy import LbConfig
from meshproxy.upstream.lb.least_request import LeastRequest
from meshproxy.upstream.lb.maglev import Maglev
from meshproxy.upstream.lb.random_lb import RandomLb
from meshproxy.upstream.lb.ring_hash import RingHash
from meshproxy.upstream.lb.round_robin import RoundRobin

__all__ = ("LbHost", "Picker", "RoundRobinPicker", "build_picker")


class LbHost(Protocol):
    """What the pickers read from a host."""

    @property
    def weight(self) -> int: ...
    @property
    def key(self) -> str: ...  # the hash key: hostname, or "address:port"
    @property
    def rq_active(self) -> int: ...  # outstanding requests, kept current by the caller


class Picker(Protocol):
    def pick(self, hash: int) -> int: ...


class RoundRobinPicker:
    """Weighted round robin (EDF schedule) behind the :class:`Picker` interface (``hash`` is ignored)."""

    __slots__ = ("_rr",)

    def __init__(self, weights: Sequence[int], offset: int = 0) -> None:
        self._rr = RoundRobin(weights, offset)

    def __len__(self) -> int:
        return len(self._rr)

    def pick(self, hash: int = 0) -> int:
        return self._rr.pick()


def build_picker(lb: LbConfig, hosts: Sequence[LbHost], seed: int) -> Picker:
    """The picker for ``lb.policy`` over ``hosts``; ``seed`` drives the policies that draw at
    random (and round robin's starting host). ValueError names the policy and the bad input."""
    if not hosts:
        raise ValueError(f"{lb.policy} picker: hosts is empty; a picker needs at least one host")
    weights = [host.weight for host in hosts]
    try:
        if lb.policy == "ROUND_ROBIN":
            return RoundRobinPicker(weights, seed)
        if lb.policy == "LEAST_REQUEST":
            return LeastRequest(weights, hosts, lb.choice_count, lb.active_request_bias, seed)
        if lb.policy == "RANDOM":
            return RandomLb(weights, seed)
        keys = [host.key for host in hosts]
        if lb.policy == "RING_HASH":
            return RingHash(keys, weights, lb.minimum_ring_size, lb.maximum_ring_size)
        if lb.policy == "MAGLEV":
            return Maglev(keys, weights, lb.maglev_table_size)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{lb.policy} picker over {len(hosts)} hosts: {exc}") from exc
    raise ValueError(
        f"lb.policy is {lb.policy!r}; supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV"
    )
