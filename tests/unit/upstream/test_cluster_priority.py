"""max_connections per routing priority in ``ClusterRuntime``: each priority's connections,
waiting queue and idle pool are its own (issue 11, defect 6). No sockets: the connection slot
calls are synchronous, and the requests and connections are the small recording objects below.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from meshproxy.config.model import Cluster, SocketAddress
from meshproxy.config.policy import Thresholds
from meshproxy.stats import ClusterStats
from meshproxy.upstream.breaker import ResourceManager
from meshproxy.upstream.cluster import ClusterRuntime, Host


def runtime(default_cx: int = 1, high_cx: int = 3, pending: int = 10) -> ClusterRuntime:
    thresholds = (
        Thresholds("DEFAULT", max_connections=default_cx, max_pending_requests=pending),
        Thresholds("HIGH", max_connections=high_cx, max_pending_requests=pending),
    )
    config = Cluster("c", "STATIC", (), thresholds=thresholds, max_idle_connections=max(1, default_cx))
    return ClusterRuntime(config, ClusterStats(), random.Random(1))


class Request:
    """A request waiting for a connection; records how the cluster woke it."""

    def __init__(self, resources: ResourceManager | None) -> None:
        self._resources = resources
        self.woken: list[Any] = []

    @property
    def resources(self) -> ResourceManager | None:
        return self._resources

    def take(self, upstream: Any) -> None:
        self.woken.append(upstream)

    def connect(self) -> None:
        self.woken.append("connect")


class Conn:
    """A pooled connection of one priority."""

    def __init__(self, host: Host, resources: ResourceManager) -> None:
        self.host = host
        self.resources = resources
        self.idle_since = 0.0
        self.closed = False

    def is_reusable(self) -> bool:
        return not self.closed

    def close(self) -> None:
        self.closed = True


def host() -> Host:
    return Host(SocketAddress("127.0.0.1", 8080), 1, "HEALTHY", 0)


def test_high_and_default_connection_limits_are_independent() -> None:
    c = runtime(default_cx=1, high_cx=3)
    high, default = c.breakers.high, c.breakers.default
    for _ in range(3):
        assert c.can_connect(high)
        c.connection_opened(high)
    assert not c.can_connect(high)
    assert c.can_connect(default) and c.can_connect()  # None is DEFAULT
    c.connection_opened(None)
    assert not c.can_connect(default)
    assert (high.connections.count, default.connections.count) == (3, 1)
    assert c.stats.cx_open == 1 and c.stats.upstream_cx_overflow == 2
    assert c.breakers.gauges()["circuit_breakers.high.cx_open"] == 1
    c.connection_closed(high)
    assert c.can_connect(high) and not c.can_connect(default)
    assert c.stats.cx_open == 1  # the flat gauge is DEFAULT's
    c.connection_closed()
    assert c.stats.cx_open == 0 and (high.connections.count, default.connections.count) == (2, 0)


def test_a_freed_slot_wakes_only_a_waiter_of_its_priority() -> None:
    c = runtime(default_cx=1, high_cx=1)
    high, default = c.breakers.high, c.breakers.default
    c.connection_opened(high)
    c.connection_opened(default)
    waiting_default, waiting_high = Request(default), Request(high)
    assert c.enqueue(waiting_default) and c.enqueue(waiting_high)
    assert c.stats.upstream_rq_pending_active == 2
    c.connection_closed(high)  # the DEFAULT waiter came first, but this is HIGH's slot
    assert waiting_high.woken == ["connect"] and waiting_default.woken == []
    assert high.pending_requests.count == 0 and default.pending_requests.count == 1
    c.connection_closed(default)
    assert waiting_default.woken == ["connect"]
    assert c.stats.upstream_rq_pending_active == 0


def test_a_released_connection_goes_to_a_waiter_of_its_priority_or_its_pool() -> None:
    c = runtime(default_cx=1, high_cx=1)
    h = host()
    high, default = c.breakers.high, c.breakers.default
    waiting_default = Request(None)
    assert c.enqueue(waiting_default)
    high_conn = Conn(h, high)
    c.release(high_conn, 1.0)  # no HIGH waiter: pooled, not handed to the DEFAULT one
    assert waiting_default.woken == [] and h.idle == [high_conn]
    assert c.acquire(h, default) is None and c.acquire(h) is None
    assert c.acquire(h, high) is high_conn and h.idle == []
    default_conn = Conn(h, default)
    c.release(default_conn, 2.0)
    assert waiting_default.woken == [default_conn] and h.idle == []


def test_acquire_takes_the_warmest_of_its_own_pool_and_drops_dead_ones() -> None:
    c = runtime(default_cx=4, high_cx=4)
    h = host()
    high, default = c.breakers.high, c.breakers.default
    old, dead, other = Conn(h, default), Conn(h, default), Conn(h, high)
    for n, conn in enumerate((old, dead, other)):
        c.release(conn, float(n))
    dead.closed = True
    assert c.acquire(h, default) is old  # the dead one was passed over and dropped
    assert h.idle == [other]


def test_each_priority_pool_has_its_own_idle_bound() -> None:
    c = runtime(default_cx=1, high_cx=3)  # max_idle_connections 1
    h = host()
    d1 = Conn(h, c.breakers.default)
    h1, h2 = Conn(h, c.breakers.high), Conn(h, c.breakers.high)
    for conn in (d1, h1, h2):
        c.release(conn, 0.0)
    assert h.idle == [d1, h1] and h2.closed  # DEFAULT's idle one does not crowd out HIGH's


def test_dequeue_takes_a_waiter_off_its_own_queue() -> None:
    c = runtime(default_cx=0, high_cx=0)
    waiting = Request(c.breakers.high)
    assert c.enqueue(waiting)
    c.dequeue(waiting)
    c.dequeue(waiting)  # a second time is harmless
    assert c.breakers.high.pending_requests.count == 0 and c.stats.upstream_rq_pending_active == 0
    assert c.breakers.high.pending_requests.underflows == 0


# A step: (priority, action); action 0 asks to connect (queueing when refused), 1 closes one.
STEPS = st.lists(st.tuples(st.sampled_from(("DEFAULT", "HIGH")), st.integers(0, 1)), max_size=80)


@given(st.integers(0, 3), st.integers(0, 3), STEPS)
def test_counts_stay_within_each_limit_and_return_to_zero(default_cx: int, high_cx: int, steps: Any) -> None:
    c = runtime(default_cx, high_cx, pending=1000)
    managers = {"DEFAULT": c.breakers.default, "HIGH": c.breakers.high}
    opened = {"DEFAULT": 0, "HIGH": 0}

    class Opener(Request):
        def connect(self) -> None:  # a woken waiter opens its connection, as a stream does
            priority = "HIGH" if self.resources is c.breakers.high else "DEFAULT"
            assert c.can_connect(self.resources)
            c.connection_opened(self.resources)
            opened[priority] += 1

    def close(priority: str) -> None:
        opened[priority] -= 1
        c.connection_closed(managers[priority])

    for priority, action in steps:
        rm = managers[priority]
        if action == 0:
            if c.can_connect(rm):
                c.connection_opened(rm)
                opened[priority] += 1
            else:
                assert c.enqueue(Opener(rm))
        elif opened[priority]:
            close(priority)
        for p, manager in managers.items():
            assert manager.connections.count == opened[p] <= manager.connections.max
            # Nobody waits while their own priority has a free slot.
            assert not c.waiters.get(manager) or not manager.connections.can_create()
    for p in managers:
        while opened[p]:
            close(p)
    for manager in managers.values():
        assert manager.connections.count == 0 and manager.connections.underflows == 0
        # Waiters are left only where the limit is 0 (nothing can ever free a slot).
        assert not c.waiters.get(manager) or manager.connections.max == 0
