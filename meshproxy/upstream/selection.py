"""Host selection across priority levels and localities: Envoy's priority load, panic mode and
locality weighted load balancing, in front of a cluster's LB picker.

Owns which *host set* a request draws from; the picker (``meshproxy.upstream.lb``) owns which
host of that set. A :class:`HostSelector` is immutable after construction: the caller builds a
new one whenever membership, weights or availability change (O(n) plus the pickers' own build),
and a pick costs at most two random draws (priority, locality: none when one level takes all
the load and localities are off), a table lookup and one picker call.

The rules, as Envoy's ``LoadBalancerBase`` computes them (``load_balancer_impl.cc``):

1. Health of priority P = ``min(100, overprovisioning_factor * available / total)`` in integer
   percent (``factor`` is Envoy's percent, 140 = 1.4). An empty level between two used ones has
   health 0.
2. Normalized total health = ``min(100, sum of health)``. Each level, from P0 down, takes
   ``min(left, health * 100 // normalized)`` percent of the load; integer rounding leftovers go to
   the first level with health > 0. So loads always sum to 100.
3. Panic: when normalized total health is 100 no level panics. Otherwise a level panics when its
   own availability (``100 * available / total``, without the factor) is below
   ``panic_threshold``; a panicking level draws from *all* its hosts, ignoring health. When every
   level panics ("total panic") the load is split by host count instead. ``panic_threshold`` 0
   disables panic: with nothing available, P0 takes the load and selection returns ``None``.
4. Locality weighted (``lb.locality_weighted``), outside panic: a locality's effective weight is
   ``locality_weight * min(1, factor / 100 * available / total)``; a locality is drawn in
   proportion to it, then the picker chooses among that locality's available hosts. Localities
   with weight 0 (unset) get no traffic; if no locality has an effective weight the whole
   priority's available hosts are used (Envoy's fallback).

Departures, each deliberate:

- Envoy's *degraded* tier is not modelled: a host is available or not (the caller decides
  whether an EDS ``DEGRADED`` host counts as available). ``weighted_priority_health`` and
  excluded hosts are not modelled either.
- The priority draw is a uniform random number, except for RING_HASH and MAGLEV, which draw the
  priority from the request hash (as Envoy's thread-aware balancers do) so one key keeps one
  priority. Those two policies ignore locality weights (Envoy folds them into the ring; ours
  builds the ring over the priority's hosts with their own weights).
- Envoy picks the locality with an EDF schedule; a weighted random draw here gives the same
  shares without per-pick mutable state.

Must not import asyncio, sockets or configuration compilers; randomness comes from the injected
``rng``.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Container, Sequence
from typing import Generic, Protocol, TypeVar

from meshproxy.config.model import Locality
from meshproxy.config.policy import LbConfig
from meshproxy.upstream.lb import Picker, build_picker

__all__ = (
    "HostSelector",
    "PickerFactory",
    "SelectableHost",
    "priority_health",
    "priority_loads",
)

HASH_POLICIES = frozenset({"RING_HASH", "MAGLEV"})
_MIX = 0x9E3779B97F4A7C15  # golden-ratio odd constant: spreads a re-pick's hash over the ring
_MASK64 = (1 << 64) - 1


class SelectableHost(Protocol):
    """What selection reads from a host; ``available`` is computed by the caller (healthy per
    EDS and active health checks, and not ejected by outlier detection)."""

    @property
    def priority(self) -> int: ...
    @property
    def locality(self) -> Locality: ...
    @property
    def locality_weight(self) -> int: ...
    @property
    def weight(self) -> int: ...
    @property
    def key(self) -> str: ...
    @property
    def rq_active(self) -> int: ...
    @property
    def available(self) -> bool: ...


H = TypeVar("H", bound=SelectableHost)
# ``build_picker``'s shape; tests inject their own to watch what is built.
PickerFactory = Callable[[LbConfig, Sequence[H], int], Picker]


def priority_health(available: int, total: int, overprovisioning_factor: int) -> int:
    """Rule 1: a level's health score in integer percent, capped at 100."""
    if total <= 0:
        return 0
    return min(100, overprovisioning_factor * available // total)


def priority_loads(health: Sequence[int]) -> list[int]:
    """Rule 2: the percent of load each level takes; all zero when nothing is healthy."""
    normalized = min(100, sum(health))
    loads = [0] * len(health)
    if normalized == 0:
        return loads
    left = 100
    first = -1
    for i, h in enumerate(health):
        if first < 0 and h > 0:
            first = i
        loads[i] = min(left, h * 100 // normalized)
        left -= loads[i]
    loads[first] += left
    return loads


class _Pool(Generic[H]):
    """A host set and the picker over it."""

    __slots__ = ("hosts", "picker")

    def __init__(self, hosts: tuple[H, ...], picker: Picker) -> None:
        self.hosts = hosts
        self.picker = picker


class _Level(Generic[H]):
    """One priority's pools: the one a pick draws from, or the localities to draw one from."""

    __slots__ = ("cumulative", "localities", "pool")

    def __init__(self, pool: _Pool[H] | None) -> None:
        self.pool = pool
        self.localities: tuple[_Pool[H], ...] = ()
        self.cumulative: tuple[float, ...] = ()


class HostSelector(Generic[H]):
    """Choose a host for a request among ``hosts`` by priority load, panic and locality.

    ``rng`` draws the priority (and the locality); it also seeds each picker. The attributes
    below are for ``/clusters`` and stats and never change after construction.
    """

    __slots__ = (
        "_by_percent",
        "_hash_priority",
        "_levels",
        "_rng",
        "_whole",
        "availability",
        "health",
        "hosts",
        "locality_weights",
        "panic",
        "priority_load",
        "total_panic",
    )

    def __init__(
        self,
        hosts: Sequence[H],
        lb: LbConfig,
        rng: random.Random,
        picker_factory: PickerFactory[H] | None = None,
    ) -> None:
        factory: PickerFactory[H] = picker_factory or build_picker
        self.hosts = tuple(hosts)
        self._rng = rng
        self._hash_priority = lb.policy in HASH_POLICIES
        factor = lb.overprovisioning_factor
        threshold = min(100.0, lb.panic_threshold)

        count = max((h.priority for h in self.hosts), default=0) + 1
        by_level: list[list[H]] = [[] for _ in range(count)]
        for h in self.hosts:
            if h.priority < 0:
                raise ValueError(f"host {h.key}: priority {h.priority} is negative")
            by_level[h.priority].append(h)
        available = [[h for h in level if h.available] for level in by_level]

        # Rules 1-3: health, load, panic.
        self.health = tuple(
            priority_health(len(a), len(t), factor) for a, t in zip(available, by_level, strict=True)
        )
        self.availability = tuple(
            100.0 * len(a) / len(t) if t else 0.0 for a, t in zip(available, by_level, strict=True)
        )
        normalized = min(100, sum(self.health))
        loads = priority_loads(self.health)
        if threshold <= 0 or normalized == 100:
            panic = [False] * count
        else:
            panic = [pct < threshold for pct in self.availability]
        self.total_panic = all(panic)
        if self.total_panic:
            loads = self._total_panic_loads([len(t) for t in by_level])
        elif normalized == 0:
            loads[0] = 100  # panic disabled and nothing available: P0 takes it and finds no host
        self.panic = tuple(panic)
        self.priority_load = tuple(loads)
        # Percent 0..99 -> level, so a pick is one index (Envoy: hash % 100 + 1 <= running sum).
        self._by_percent = tuple(
            itertools.chain.from_iterable(itertools.repeat(p, load) for p, load in enumerate(loads))
        )

        # Rule 4 and the pickers; a level without load gets none.
        weighted = lb.locality_weighted and not self._hash_priority
        levels: list[_Level[H]] = []
        locality_weights: list[tuple[tuple[Locality, float], ...]] = []
        for p in range(count):
            if loads[p] == 0:
                levels.append(_Level(None))
                locality_weights.append(())
                continue
            level: _Level[H] = _Level(None)
            shares: tuple[tuple[Locality, float], ...] = ()
            if weighted and not panic[p]:
                shares = self._localities(level, lb, by_level[p], factor, factory)
            if not level.localities:
                level.pool = self._pool(lb, by_level[p] if panic[p] else available[p], factory)
            levels.append(level)
            locality_weights.append(shares)
        self._levels = tuple(levels)
        # The usual case, one level with all the load, needs no priority draw.
        self._whole = levels[loads.index(100)] if 100 in loads else None
        self.locality_weights = tuple(locality_weights)

    # ------------------------------------------------------------------ construction

    def _pool(self, lb: LbConfig, hosts: Sequence[H], factory: PickerFactory[H]) -> _Pool[H] | None:
        if not hosts:
            return None
        return _Pool(tuple(hosts), factory(lb, hosts, self._rng.getrandbits(32)))

    def _localities(
        self, level: _Level[H], lb: LbConfig, hosts: Sequence[H], factor: int, factory: PickerFactory[H]
    ) -> tuple[tuple[Locality, float], ...]:
        """Group a level's hosts by locality (first-seen order) and weight each; Envoy's
        ``effectiveLocalityWeight``. Returns (locality, effective weight) for stats."""
        groups: dict[Locality, list[H]] = {}
        for h in hosts:
            groups.setdefault(h.locality, []).append(h)
        pools: list[_Pool[H]] = []
        cumulative: list[float] = []
        shares: list[tuple[Locality, float]] = []
        running = 0.0
        for locality, members in groups.items():
            up = [h for h in members if h.available]
            weight = members[0].locality_weight * min(1.0, factor / 100.0 * len(up) / len(members))
            shares.append((locality, weight))
            if weight <= 0.0:
                continue
            pool = self._pool(lb, up, factory)
            assert pool is not None  # weight > 0 implies an available host
            running += weight
            pools.append(pool)
            cumulative.append(running)
        if pools:
            level.localities = tuple(pools)
            level.cumulative = tuple(cumulative)
        return tuple(shares)

    @staticmethod
    def _total_panic_loads(sizes: list[int]) -> list[int]:
        """Envoy's ``recalculateLoadInTotalPanic``: load by host count, remainder to the first."""
        total = sum(sizes)
        loads = [0] * len(sizes)
        if total == 0:
            loads[0] = 100
            return loads
        loads = [100 * n // total for n in sizes]
        first = next(i for i, n in enumerate(sizes) if n)
        loads[first] += 100 - sum(loads)
        return loads

    # ------------------------------------------------------------------ request path

    @property
    def in_panic(self) -> bool:
        """True when any level that takes load draws from unhealthy hosts."""
        return any(p and load for p, load in zip(self.panic, self.priority_load, strict=True))

    def select(
        self, hash: int = 0, exclude: Container[H] | None = None, reselect_attempts: int = 1
    ) -> H | None:
        """Pick a host; ``None`` when the chosen level has no host to offer.

        ``exclude`` (hosts already tried, for a retry) is avoided by up to ``reselect_attempts``
        further picks (RetryPolicy.host_selection_retry_max_attempts); if every pick lands in
        it the last pick is returned, as Envoy's ``chooseHost`` does. Whether a pick was a panic
        pick is ``selector.panic[host.priority]``.
        """
        host = self._select_once(hash)
        if exclude is None:
            return host
        attempt = 0
        while host is not None and host in exclude and attempt < reselect_attempts:
            attempt += 1
            # A hash policy would land on the same host again; move the hash for each re-pick.
            host = self._select_once((hash + attempt * _MIX) & _MASK64 if self._hash_priority else hash)
        return host

    def _select_once(self, hash: int) -> H | None:
        level = self._whole
        if level is None:
            percent = hash % 100 if self._hash_priority else int(self._rng.random() * 100)
            level = self._levels[self._by_percent[percent]]
        if level.localities:
            cumulative = level.cumulative
            i = bisect.bisect_right(cumulative, self._rng.random() * cumulative[-1])
            # random() < 1, but the product can round up to the total: clamp to the last one.
            pool: _Pool[H] | None = level.localities[min(i, len(cumulative) - 1)]
        else:
            pool = level.pool
        if pool is None:
            return None
        return pool.hosts[pool.picker.pick(hash)]
