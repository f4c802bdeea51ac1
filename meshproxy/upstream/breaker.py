"""Circuit breakers: a cluster's admission counters, in the shape of Envoy's
``resource_manager_impl.h``.

Owns the live counts of connections, pending requests, requests and retries for each routing
priority (DEFAULT, HIGH) and their limits from ``circuit_breakers.thresholds``. The request path
asks ``can_create()`` before it opens, queues, sends or retries, then pairs ``inc()`` with one
``dec()`` when the thing ends. Nothing here refuses an ``inc()``: as in Envoy, admission is the
caller's check, so a resource can sit above a lowered limit after a swap until it drains.

Config and counts live apart: :meth:`Breakers.update` installs new thresholds and keeps every
count, so requests in flight across a config swap are neither forgotten (a leak of capacity)
nor double counted. A ``dec()`` with nothing to release is a caller bug; it never drives a count
negative and is counted in ``underflows`` instead of raising on the request path.

Departure: with a retry budget Envoy zeroes ``remaining_retries`` (its gauge cannot follow the
request counts); here gauges are computed when read, so it reports the budget's true headroom.

Fair share (a meshproxy rule, not Envoy's): ``FairShare`` keeps the max_requests count of each
request source (the downstream peer's IP) so that one source cannot hold the whole breaker and
deny everyone else (issue 12, finding 4). It bites only under contention: while the breaker is
less than half full every request is admitted as in Envoy; from half full on, a source already
holding ``max(1, (max_requests - max_requests // 4) // n)`` requests, ``n`` the sources holding
some (itself included), is refused. So a quarter of the breaker is kept for sources that hold
none of it: a newcomer finds room even when one source came first and asked for everything,
a lone source can use three quarters of it (all of a breaker under 4), and two or more share
the rest equally once it matters. Sources admitted before a newcomer shrank their share keep
what they hold and are refused until they are back under it (nothing is pre-empted). Pending
requests need no share of their own: a request queues for a connection only after this
admission, so a source's pending count is bounded by its admitted one.

Outlier ejection is not here (it is per host and lives with outlier detection). Must not import
asyncio, sockets or configuration compilers.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshproxy.config.policy import DEFAULT_THRESHOLDS, RetryBudget, Thresholds

__all__ = ("ROUTING_PRIORITIES", "Breakers", "FairShare", "Resource", "ResourceManager", "RetryResource")

ROUTING_PRIORITIES: tuple[str, ...] = ("DEFAULT", "HIGH")  # Envoy's RoutingPriority


class Resource:
    """One admission counter: a live ``count`` against a ``max``."""

    __slots__ = ("_max", "count", "underflows")

    def __init__(self, maximum: int) -> None:
        self._max = maximum
        self.count = 0
        self.underflows = 0

    @property
    def max(self) -> int:
        return self._max

    def can_create(self) -> bool:
        return self.count < self._max

    def inc(self) -> None:
        self.count += 1

    def dec(self) -> None:
        if self.count > 0:
            self.count -= 1
        else:
            self.underflows += 1

    @property
    def remaining(self) -> int:
        """Headroom for gauges (``remaining_cx`` …); 0 when at or above the limit."""
        return max(0, self.max - self.count)

    @property
    def open(self) -> bool:
        """The breaker is open (``cx_open`` … = 1): the next ``can_create()`` says no."""
        return not self.can_create()


class RetryResource(Resource):
    """Retries: ``max_retries``, or with a retry budget ``max(min_retry_concurrency,
    budget_percent % of (active + pending requests))`` (Envoy's ``RetryBudgetImpl::max``)."""

    __slots__ = ("_budget", "_pending", "_requests")

    def __init__(
        self, maximum: int, budget: RetryBudget | None, requests: Resource, pending: Resource
    ) -> None:
        super().__init__(maximum)
        self._budget = budget
        self._requests = requests
        self._pending = pending

    @property
    def max(self) -> int:
        budget = self._budget
        if budget is None:
            return self._max
        active = self._requests.count + self._pending.count
        # int() truncates as Envoy's double -> uint64 conversion does.
        return max(int(budget.budget_percent / 100.0 * active), budget.min_retry_concurrency)

    def can_create(self) -> bool:
        return self.count < self.max


class FairShare:
    """The live request count of each source of one ``Resource`` (see the module docstring).

    Cost: one dict lookup per admission and per release; the dict holds only the sources with a
    request in progress, so it is bounded by the resource's count.
    """

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: dict[bytes, int] = {}

    def admits(self, source: bytes, count: int, maximum: int) -> bool:
        """May ``source`` take one more of a resource now at ``count`` of ``maximum``?"""
        if count * 2 < maximum:
            return True  # no contention: Envoy's behaviour
        held = self.held.get(source, 0)
        sources = len(self.held) + (held == 0)
        return held < max(1, (maximum - maximum // 4) // sources)

    def inc(self, source: bytes) -> None:
        held = self.held
        held[source] = held.get(source, 0) + 1

    def dec(self, source: bytes) -> None:
        held = self.held
        left = held.get(source, 0) - 1
        if left > 0:
            held[source] = left
        else:
            held.pop(source, None)


class ResourceManager:
    """The four admission counters of one routing priority of one cluster, and the requests'
    fair share by source."""

    __slots__ = ("connections", "pending_requests", "requests", "retries", "share", "thresholds")

    def __init__(self, thresholds: Thresholds) -> None:
        _check(thresholds, "circuit_breakers.thresholds")
        self.thresholds = thresholds
        self.connections = Resource(thresholds.max_connections)
        self.pending_requests = Resource(thresholds.max_pending_requests)
        self.requests = Resource(thresholds.max_requests)
        self.retries = RetryResource(
            thresholds.max_retries, thresholds.retry_budget, self.requests, self.pending_requests
        )
        self.share = FairShare()

    def update(self, thresholds: Thresholds) -> None:
        """New limits; every count stays as it is."""
        _check(thresholds, "circuit_breakers.thresholds")
        self.thresholds = thresholds
        self.connections._max = thresholds.max_connections
        self.pending_requests._max = thresholds.max_pending_requests
        self.requests._max = thresholds.max_requests
        self.retries._max = thresholds.max_retries
        self.retries._budget = thresholds.retry_budget

    def gauges(self) -> dict[str, int]:
        """Envoy's per-priority circuit breaker gauges; ``remaining_*`` only with
        ``track_remaining`` (as Envoy)."""
        out = {
            "cx_open": int(self.connections.open),
            "rq_pending_open": int(self.pending_requests.open),
            "rq_open": int(self.requests.open),
            "rq_retry_open": int(self.retries.open),
        }
        if self.thresholds.track_remaining:
            out["remaining_cx"] = self.connections.remaining
            out["remaining_pending"] = self.pending_requests.remaining
            out["remaining_rq"] = self.requests.remaining
            out["remaining_retries"] = self.retries.remaining
        return out


class Breakers:
    """A cluster's resource managers by routing priority; carried across config swaps.

    Both priorities always exist: a priority the config does not mention gets Envoy's default
    thresholds, so a swap that drops HIGH keeps its in-flight counts instead of losing them.
    """

    __slots__ = ("_by_priority",)

    def __init__(self, thresholds: Sequence[Thresholds] = (DEFAULT_THRESHOLDS,)) -> None:
        chosen = _by_priority(thresholds)
        self._by_priority = {p: ResourceManager(chosen[p]) for p in ROUTING_PRIORITIES}

    def __getitem__(self, priority: str) -> ResourceManager:
        """The manager for ``"DEFAULT"`` or ``"HIGH"`` (KeyError otherwise)."""
        return self._by_priority[priority]

    @property
    def default(self) -> ResourceManager:
        return self._by_priority["DEFAULT"]

    @property
    def high(self) -> ResourceManager:
        return self._by_priority["HIGH"]

    def update(self, thresholds: Sequence[Thresholds]) -> None:
        """Install a new config's thresholds; live counts carry over untouched. Validates all
        of them before changing any, so a rejected update leaves the old limits in place."""
        chosen = _by_priority(thresholds)
        for p in ROUTING_PRIORITIES:
            self._by_priority[p].update(chosen[p])

    def gauges(self) -> dict[str, int]:
        """``circuit_breakers.<priority>.<gauge>`` for the cluster's stats scope."""
        return {
            f"circuit_breakers.{p.lower()}.{name}": value
            for p, manager in self._by_priority.items()
            for name, value in manager.gauges().items()
        }


def _by_priority(thresholds: Sequence[Thresholds]) -> dict[str, Thresholds]:
    chosen: dict[str, Thresholds] = {}
    for i, t in enumerate(thresholds):
        path = f"circuit_breakers.thresholds[{i}]"
        if t.priority not in ROUTING_PRIORITIES:
            raise ValueError(f"{path}.priority: {t.priority!r} is not one of {', '.join(ROUTING_PRIORITIES)}")
        if t.priority in chosen:
            raise ValueError(f"{path}.priority: {t.priority} is given twice; give each priority once")
        _check(t, path)
        chosen[t.priority] = t
    for p in ROUTING_PRIORITIES:
        chosen.setdefault(p, Thresholds(priority=p))  # type: ignore[arg-type]  # p is one of the Literal priorities
    return chosen


def _check(t: Thresholds, path: str) -> None:
    for name in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
        value = getattr(t, name)
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{path}.{name}: {value!r} must be a whole number, 0 or more")
    budget = t.retry_budget
    if budget is not None:
        if not 0.0 <= budget.budget_percent <= 100.0:
            raise ValueError(f"{path}.retry_budget.budget_percent: {budget.budget_percent} must be 0-100")
        if budget.min_retry_concurrency < 0:
            raise ValueError(
                f"{path}.retry_budget.min_retry_concurrency: {budget.min_retry_concurrency} must be 0 or more"
            )
