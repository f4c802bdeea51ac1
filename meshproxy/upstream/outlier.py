"""Outlier detection (passive health checking) for one cluster: Envoy's algorithm, sans-I/O.

Owns per-host outlier state keyed by the host key (``"10.0.0.1:80"``), so it survives a
configuration swap (``configure``) and membership changes (``set_hosts``). The caller reports each
upstream result (``record`` for a response, ``record_local`` for a connect failure, timeout or
reset) and calls ``tick(now)`` every ``config.interval``; both return what changed so the caller
rebuilds its host selector only then. ``now`` and ``rng`` are injected. Must not import asyncio,
sockets or protobuf.

Envoy semantics followed (``source/common/upstream/outlier_detection_impl.cc``):

- Consecutive 5xx / gateway failure (502, 503, 504) / local-origin failure eject inline when the
  counter reaches its threshold (0 disables); detection resets that counter whether or not the
  ejection is enforced (``enforcing_*`` is a percentage roll on ``rng``). Gateway failure is
  checked before 5xx, as in Envoy. With ``split_external_local_origin_errors`` false a local
  failure counts as a 503 and a local success is not counted (the response that follows is).
- Success rate and failure percentage are judged at each ``tick`` on the interval that just
  ended, over hosts that are not ejected and carried at least ``*_request_volume`` requests; the
  cluster needs ``*_minimum_hosts`` such hosts. Success rate ejects below
  ``mean - stdev_factor/1000 * stdev`` (population stdev, rates in percent); failure percentage
  ejects at ``100 - rate >= threshold``. With the split on, local-origin results have their own
  success-rate and failure-percentage judgement (``*_local_origin`` counters).
- Ejection time is ``min(base_ejection_time * backoff, max(max_ejection_time, base))``; each
  ejection raises ``backoff`` by one while ``backoff * base < max + base``; each tick a host spends
  in service lowers it by one. Un-ejection happens at the first tick after the time has passed,
  and resets the host's consecutive counters.
- The cap (current Envoy): an ejection is allowed while ``100 * (active + 1) / hosts <=
  max_ejection_percent``, or when nothing is ejected and ``always_eject_one_host`` is set; a
  refused ejection counts ``ejections_overflow``. With the default 10 % a cluster needs 10 hosts
  before anything is ejected, unless ``always_eject_one_host`` (default false, as in Envoy).

Latency ejection (our ``LatencyEjection`` extension; Envoy's request for it, envoyproxy/envoy
#2932, is open): at each tick, every host not ejected with at least ``request_volume`` successful
(non-5xx) responses in the interval is judged. ``M`` is the median of the judged hosts' median
latencies; a host is ejected when its median exceeds ``threshold_factor * M`` and exceeds ``M`` by
at least ``minimum_excess`` seconds, with at least ``minimum_hosts`` judged. Why a ratio to the
median and not success rate's mean minus k standard deviations: latency is heavy-tailed and
scale-free, and with few hosts one slow host inflates the stdev enough to hide itself. Bounds:
a host can only exceed ``factor * M`` (factor > 1) when it is above the median, so fewer than half
of the judged hosts are candidates in one interval and a uniformly slow cluster ejects nobody;
``max_ejection_percent`` caps the rest as for every other kind. Medians come from a sparse
log-histogram with 16 buckets per octave (a bucket is reported at its geometric middle), so a
reported median is within 2.2 % of the true one: hosts more than ~4.5 % beyond the threshold are
ejected and hosts more than ~4.5 % below it are not. ``record`` stays O(1): one ``log2`` and one
dict increment, and only when latency ejection is configured.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable
from typing import Literal, get_args

from meshproxy.config.policy import LatencyEjection, OutlierDetection

EjectionType = Literal[
    "consecutive_5xx",
    "consecutive_gateway_failure",
    "consecutive_local_origin_failure",
    "success_rate",
    "local_origin_success_rate",
    "failure_percentage",
    "failure_percentage_local_origin",
    "latency",
]
EJECTION_TYPES: tuple[EjectionType, ...] = get_args(EjectionType)

_GATEWAY = frozenset({502, 503, 504})
_BUCKETS_PER_OCTAVE = 16
_MIN_LATENCY = 1e-6  # 1 us: anything faster lands in one bucket
_log2, _floor = math.log2, math.floor  # module globals: cheaper than attribute lookups per request


class OutlierStats:
    """Envoy's ``cluster.<name>.outlier_detection.*`` (plus ``*_latency`` for our extension)."""

    __slots__ = ("detected", "ejections_active", "ejections_enforced_total", "ejections_overflow", "enforced")

    def __init__(self) -> None:
        self.ejections_active = 0  # gauge
        self.ejections_overflow = 0
        self.ejections_enforced_total = 0
        self.detected: dict[EjectionType, int] = dict.fromkeys(EJECTION_TYPES, 0)
        self.enforced: dict[EjectionType, int] = dict.fromkeys(EJECTION_TYPES, 0)

    def items(self) -> list[tuple[str, int]]:
        """(Envoy stat name, value) pairs, for the exposition."""
        out = [
            ("ejections_active", self.ejections_active),
            ("ejections_overflow", self.ejections_overflow),
            ("ejections_enforced_total", self.ejections_enforced_total),
        ]
        out += [(f"ejections_detected_{k}", v) for k, v in self.detected.items()]
        out += [(f"ejections_enforced_{k}", v) for k, v in self.enforced.items()]
        return out


class _Monitor:
    """One host's counters: consecutive runs, this interval's volumes, ejection state."""

    __slots__ = (
        "backoff",
        "c5xx",
        "cgw",
        "clocal",
        "ejected",
        "ejected_at",
        "ext_success",
        "ext_total",
        "latency",
        "latency_n",
        "local_success",
        "local_total",
        "num_ejections",
    )

    def __init__(self) -> None:
        self.c5xx = self.cgw = self.clocal = 0
        self.ext_total = self.ext_success = self.local_total = self.local_success = 0
        self.latency: dict[int, int] = {}
        self.latency_n = 0
        self.ejected = False
        self.ejected_at = 0.0
        self.backoff = 0
        self.num_ejections = 0

    def reset_interval(self) -> None:
        self.ext_total = self.ext_success = self.local_total = self.local_success = 0
        if self.latency_n:
            self.latency = {}
            self.latency_n = 0

    def median_latency(self) -> float:
        """Lower median of this interval's histogram, at its bucket's geometric middle."""
        rank = (self.latency_n + 1) // 2
        seen = 0
        for bucket in sorted(self.latency):
            seen += self.latency[bucket]
            if seen >= rank:
                return float(2.0 ** ((bucket + 0.5) / _BUCKETS_PER_OCTAVE))
        raise AssertionError("empty latency histogram")  # callers check latency_n first


class OutlierDetector:
    """Outlier state of one cluster's hosts; see the module docstring for the rules."""

    def __init__(self, config: OutlierDetection, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()
        self.stats = OutlierStats()
        self._hosts: dict[str, _Monitor] = {}
        self._track_latency = config.latency is not None
        # Last success-rate judgement (mean, ejection threshold) for /clusters; None: not judged.
        self.success_rate_average: float | None = None
        self.success_rate_ejection_threshold: float | None = None

    # ------------------------------------------------------------------ membership, config

    def configure(self, config: OutlierDetection) -> None:
        """A new configuration for the same cluster: host state carries over."""
        self.config = config
        self._track_latency = config.latency is not None

    def set_hosts(self, keys: Iterable[str]) -> None:
        """Install the host set; retained hosts keep their state, removed ones are forgotten."""
        wanted = set(keys)
        for key in [k for k in self._hosts if k not in wanted]:
            if self._hosts.pop(key).ejected:
                self.stats.ejections_active -= 1
        for key in wanted:
            if key not in self._hosts:
                self._hosts[key] = _Monitor()

    def is_ejected(self, key: str) -> bool:
        m = self._hosts.get(key)
        return m is not None and m.ejected

    def ejected_keys(self) -> frozenset[str]:
        return frozenset(k for k, m in self._hosts.items() if m.ejected)

    def num_ejections(self, key: str) -> int:
        """How many times the host was ejected since it joined (Envoy's ``num_ejections``)."""
        m = self._hosts.get(key)
        return 0 if m is None else m.num_ejections

    # ------------------------------------------------------------------ request path

    def record(self, key: str, status: int, latency: float, now: float) -> bool:
        """An upstream response; True when it ejected the host."""
        m = self._hosts.get(key)
        if m is None:
            return False
        m.ext_total += 1
        if status < 500 or status > 599:
            m.ext_success += 1
            m.c5xx = m.cgw = 0
            if self._track_latency:
                b = _floor(_log2(latency if latency > _MIN_LATENCY else _MIN_LATENCY) * _BUCKETS_PER_OCTAVE)
                hist = m.latency
                hist[b] = hist.get(b, 0) + 1
                m.latency_n += 1
            return False
        m.c5xx += 1
        if status in _GATEWAY:
            m.cgw += 1
        else:
            m.cgw = 0
        if m.ejected:
            return False
        cfg = self.config
        changed = False
        if 0 < cfg.consecutive_gateway_failure <= m.cgw:
            m.cgw = 0
            changed = self._detect(key, m, "consecutive_gateway_failure", now)
        if 0 < cfg.consecutive_5xx <= m.c5xx and not m.ejected:
            m.c5xx = 0
            changed = self._detect(key, m, "consecutive_5xx", now) or changed
        return changed

    def record_local(self, key: str, success: bool, now: float) -> bool:
        """A local-origin result (connect success, or connect failure / timeout / reset); True
        when it ejected the host."""
        if not self.config.split_external_local_origin_errors:
            # Envoy maps a local failure to 503 and does not count a local success.
            return False if success else self.record(key, 503, 0.0, now)
        m = self._hosts.get(key)
        if m is None:
            return False
        m.local_total += 1
        if success:
            m.local_success += 1
            m.clocal = 0
            return False
        m.clocal += 1
        threshold = self.config.consecutive_local_origin_failure
        if m.ejected or not 0 < threshold <= m.clocal:
            return False
        m.clocal = 0
        return self._detect(key, m, "consecutive_local_origin_failure", now)

    # ------------------------------------------------------------------ interval

    def tick(self, now: float) -> list[tuple[str, bool]]:
        """The interval timer: return hosts whose time is up, then judge the interval that
        ended. Returns ``(key, ejected)`` for every host whose state changed."""
        cfg = self.config
        base = cfg.base_ejection_time
        longest = max(cfg.max_ejection_time, base)
        returned: list[str] = []
        for key, m in self._hosts.items():
            if m.ejected:
                if min(base * m.backoff, longest) <= now - m.ejected_at:
                    m.ejected = False
                    m.c5xx = m.cgw = m.clocal = 0
                    self.stats.ejections_active -= 1
                    returned.append(key)
            elif m.backoff:
                m.backoff -= 1
        live = [(k, m) for k, m in self._hosts.items() if not m.ejected]
        ejected: list[str] = []
        external = [(k, m, m.ext_total, m.ext_success) for k, m in live]
        self._judge_rates(external, "success_rate", "failure_percentage", now, ejected)
        if cfg.split_external_local_origin_errors:
            local = [(k, m, m.local_total, m.local_success) for k, m in live]
            self._judge_rates(
                local, "local_origin_success_rate", "failure_percentage_local_origin", now, ejected
            )
        if cfg.latency is not None:
            self._judge_latency(cfg.latency, live, now, ejected)
        for m in self._hosts.values():
            m.reset_interval()
        # Net changes: a host returned and judged out again in the same tick did not change.
        again = set(returned) & set(ejected)
        changes = [(k, False) for k in returned if k not in again]
        return changes + [(k, True) for k in ejected if k not in again]

    def _judge_rates(
        self,
        volumes: list[tuple[str, _Monitor, int, int]],
        sr_kind: EjectionType,
        fp_kind: EjectionType,
        now: float,
        ejected: list[str],
    ) -> None:
        cfg = self.config
        sr_volume, fp_volume = cfg.success_rate_request_volume, cfg.failure_percentage_request_volume
        sr_hosts = [(k, m, 100.0 * ok / n) for k, m, n, ok in volumes if n and n >= sr_volume]
        if sr_hosts and len(sr_hosts) >= cfg.success_rate_minimum_hosts:
            rates = [r for _, _, r in sr_hosts]
            mean = sum(rates) / len(rates)
            stdev = math.sqrt(sum((r - mean) ** 2 for r in rates) / len(rates))
            threshold = mean - cfg.success_rate_stdev_factor / 1000.0 * stdev
            if sr_kind == "success_rate":
                self.success_rate_average, self.success_rate_ejection_threshold = mean, threshold
            for key, m, rate in sr_hosts:
                if rate < threshold and not m.ejected and self._detect(key, m, sr_kind, now):
                    ejected.append(key)
        elif sr_kind == "success_rate":
            self.success_rate_average = self.success_rate_ejection_threshold = None
        fp_hosts = [(k, m, 100.0 * ok / n) for k, m, n, ok in volumes if n and n >= fp_volume]
        if fp_hosts and len(fp_hosts) >= cfg.failure_percentage_minimum_hosts:
            for key, m, rate in fp_hosts:
                failing = 100.0 - rate >= cfg.failure_percentage_threshold
                if failing and not m.ejected and self._detect(key, m, fp_kind, now):
                    ejected.append(key)

    def _judge_latency(
        self,
        lat: LatencyEjection,
        live: list[tuple[str, _Monitor]],
        now: float,
        ejected: list[str],
    ) -> None:
        volume = lat.request_volume
        judged = [(k, m, m.median_latency()) for k, m in live if m.latency_n and m.latency_n >= volume]
        if not judged or len(judged) < lat.minimum_hosts:
            return
        peers = statistics.median(med for _, _, med in judged)
        for key, m, med in judged:
            slow = med > lat.threshold_factor * peers and med - peers >= lat.minimum_excess
            if slow and not m.ejected and self._detect(key, m, "latency", now):
                ejected.append(key)

    # ------------------------------------------------------------------ ejection

    def _detect(self, key: str, m: _Monitor, kind: EjectionType, now: float) -> bool:
        """An outlier was found: count it, then eject if the cap and the enforcement roll allow."""
        stats = self.stats
        stats.detected[kind] += 1
        active = stats.ejections_active
        always_one = self.config.always_eject_one_host
        if 100 * (active + 1) > self.config.max_ejection_percent * len(self._hosts) and not (
            always_one and active == 0
        ):
            stats.ejections_overflow += 1
            return False
        if not self._enforced(kind):
            return False
        m.ejected = True
        m.ejected_at = now
        m.num_ejections += 1
        base = self.config.base_ejection_time
        if m.backoff * base < self.config.max_ejection_time + base:
            m.backoff += 1
        stats.ejections_active += 1
        stats.ejections_enforced_total += 1
        stats.enforced[kind] += 1
        return True

    def _enforced(self, kind: EjectionType) -> bool:
        cfg = self.config
        if kind == "latency":
            assert cfg.latency is not None
            percent = cfg.latency.enforcing
        else:
            percent = getattr(cfg, _ENFORCING[kind])
        if percent >= 100:
            return True
        if percent <= 0:
            return False
        return self.rng.randrange(100) < percent


_ENFORCING: dict[EjectionType, str] = {
    "consecutive_5xx": "enforcing_consecutive_5xx",
    "consecutive_gateway_failure": "enforcing_consecutive_gateway_failure",
    "consecutive_local_origin_failure": "enforcing_consecutive_local_origin_failure",
    "success_rate": "enforcing_success_rate",
    "local_origin_success_rate": "enforcing_local_origin_success_rate",
    "failure_percentage": "enforcing_failure_percentage",
    "failure_percentage_local_origin": "enforcing_failure_percentage_local_origin",
}
