"""A hypothesis state machine over a cluster's circuit breakers: counts move only by inc/dec,
never go negative, survive every threshold swap unchanged, and ``can_create`` always agrees
with the limit the current thresholds give (the retry budget computed independently here)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from meshproxy.config.policy import RetryBudget, Thresholds
from meshproxy.upstream.breaker import ROUTING_PRIORITIES, Breakers, Resource, ResourceManager

RESOURCES = ("connections", "pending_requests", "requests", "retries")

budgets = st.none() | st.builds(
    RetryBudget,
    budget_percent=st.sampled_from([0.0, 10.0, 20.0, 33.3, 100.0]),
    min_retry_concurrency=st.integers(0, 4),
)


def thresholds_for(priority: str) -> st.SearchStrategy[Thresholds]:
    return st.builds(
        Thresholds,
        priority=st.just(priority),
        max_connections=st.integers(0, 6),
        max_pending_requests=st.integers(0, 6),
        max_requests=st.integers(0, 6),
        max_retries=st.integers(0, 6),
        retry_budget=budgets,
        track_remaining=st.booleans(),
    )


# A config names DEFAULT, HIGH, both or neither (the missing ones get Envoy's defaults).
configs = st.tuples(st.none() | thresholds_for("DEFAULT"), st.none() | thresholds_for("HIGH")).map(
    lambda pair: [t for t in pair if t is not None]
)


def expected_max(t: Thresholds, resource: str, counts: dict[str, int]) -> int:
    if resource != "retries":
        return int(getattr(t, f"max_{resource}"))
    if t.retry_budget is None:
        return t.max_retries
    active = counts["requests"] + counts["pending_requests"]
    return max(int(t.retry_budget.budget_percent * active / 100.0), t.retry_budget.min_retry_concurrency)


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.breakers = Breakers()
        self.config: dict[str, Thresholds] = {p: Thresholds(priority=p) for p in ROUTING_PRIORITIES}  # type: ignore[arg-type]
        self.counts = {p: dict.fromkeys(RESOURCES, 0) for p in ROUTING_PRIORITIES}
        self.underflows = {p: dict.fromkeys(RESOURCES, 0) for p in ROUTING_PRIORITIES}

    def resource(self, priority: str, name: str) -> Resource:
        manager: ResourceManager = self.breakers[priority]
        return getattr(manager, name)  # type: ignore[no-any-return]

    @rule(priority=st.sampled_from(ROUTING_PRIORITIES), name=st.sampled_from(RESOURCES))
    def admit(self, priority: str, name: str) -> None:
        """The request path: inc only when admitted."""
        res = self.resource(priority, name)
        if res.can_create():
            res.inc()
            self.counts[priority][name] += 1

    @rule(priority=st.sampled_from(ROUTING_PRIORITIES), name=st.sampled_from(RESOURCES))
    def force(self, priority: str, name: str) -> None:
        """inc is never refused (Envoy's shape): a caller may overshoot."""
        self.resource(priority, name).inc()
        self.counts[priority][name] += 1

    @rule(priority=st.sampled_from(ROUTING_PRIORITIES), name=st.sampled_from(RESOURCES))
    def release(self, priority: str, name: str) -> None:
        self.resource(priority, name).dec()
        if self.counts[priority][name] > 0:
            self.counts[priority][name] -= 1
        else:
            self.underflows[priority][name] += 1

    @rule(config=configs)
    def swap(self, config: list[Thresholds]) -> None:
        self.breakers.update(config)
        self.config = {p: Thresholds(priority=p) for p in ROUTING_PRIORITIES}  # type: ignore[arg-type]
        self.config.update({t.priority: t for t in config})

    @invariant()
    def counts_match_and_never_negative(self) -> None:
        for p in ROUTING_PRIORITIES:
            for name in RESOURCES:
                res = self.resource(p, name)
                assert res.count == self.counts[p][name] >= 0
                assert res.underflows == self.underflows[p][name]

    @invariant()
    def admission_agrees_with_the_limit(self) -> None:
        for p in ROUTING_PRIORITIES:
            t = self.config[p]
            assert self.breakers[p].thresholds == t
            for name in RESOURCES:
                res = self.resource(p, name)
                limit = expected_max(t, name, self.counts[p])
                assert res.max == limit
                assert res.can_create() == (self.counts[p][name] < limit)
                assert res.open == (not res.can_create())
                assert res.remaining == max(0, limit - self.counts[p][name])

    @invariant()
    def gauges_agree(self) -> None:
        gauges = self.breakers.gauges()
        for p in ROUTING_PRIORITIES:
            prefix = f"circuit_breakers.{p.lower()}."
            assert gauges[prefix + "rq_open"] == int(self.resource(p, "requests").open)
            assert (prefix + "remaining_rq" in gauges) == self.config[p].track_remaining


TestBreakerState = BreakerMachine.TestCase
TestBreakerState.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
