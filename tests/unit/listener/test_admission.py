"""Admission rules (``meshproxy/listener/admission.py``) and the log limiter, without sockets:
the descriptor reserve against a counter the test controls, the global limit, the pending cap
and the overload reject, in the rules' order."""

from __future__ import annotations

import logging
import random

import pytest

from meshproxy.listener.admission import MIN_RESERVE, Admission, FdReserve, Refusal
from meshproxy.listener.log_limit import LogLimiter
from meshproxy.overload.config import (
    DOWNSTREAM_CONNECTIONS,
    REJECT_INCOMING_CONNECTIONS,
    Action,
    Monitor,
    OverloadConfig,
    Trigger,
)
from meshproxy.overload.runtime import OverloadRuntime


class OpenFds:
    def __init__(self, n: int) -> None:
        self.n = n
        self.counts = 0

    def __call__(self) -> int:
        self.counts += 1
        return self.n


def test_reserve_is_a_tenth_of_the_limit_with_a_floor() -> None:
    assert FdReserve(1000, OpenFds(0)).reserve == 100
    assert FdReserve(50, OpenFds(0)).reserve == MIN_RESERVE
    assert FdReserve(None, OpenFds(0)).line is None


def test_reserve_refuses_near_the_line_and_recounts_at_most_once_per_interval() -> None:
    fds = OpenFds(10)
    reserve = FdReserve(200, fds, recount_interval=0.1)  # line 180
    admitted = 0
    while reserve.admit(0.0):
        admitted += 1
        fds.n += 2  # each admitted connection and the upstream one it may open
        assert admitted < 1000
    # The estimate errs high only: the first refusal comes once a recount shows the line near.
    assert fds.n + 2 > reserve.line
    recounts = fds.counts
    assert not reserve.admit(0.05)  # within the interval: refused without a recount
    assert fds.counts == recounts
    fds.n = 20  # connections closed meanwhile
    assert reserve.admit(0.2)
    assert fds.counts == recounts + 1


def test_estimate_counts_admissions_between_recounts() -> None:
    fds = OpenFds(0)
    reserve = FdReserve(1000, fds)  # line 900
    for _ in range(450):
        assert reserve.admit(0.0)
    assert fds.counts == 1  # at start; the estimate (2 per connection) just reached the line
    # The next one crosses it: one recount (the real count is low), not one per accept.
    assert reserve.admit(1.0)
    assert fds.counts == 2


def runtime(max_connections: int | None = None, reject_at: float | None = None) -> OverloadRuntime:
    if max_connections is None:
        return OverloadRuntime(None)
    actions = ()
    if reject_at is not None:
        actions = (Action(REJECT_INCOMING_CONNECTIONS, (Trigger(DOWNSTREAM_CONNECTIONS, reject_at),)),)
    monitor = Monitor(DOWNSTREAM_CONNECTIONS, float(max_connections))
    return OverloadRuntime(OverloadConfig(monitors=(monitor,), actions=actions))


def test_global_limit_counts_slots_and_release_gives_them_back() -> None:
    admission = Admission(runtime(3), FdReserve(None, OpenFds(0)), random.Random(1))
    assert [admission.admit(0, 0.0) for _ in range(4)] == [None, None, None, Refusal.GLOBAL_LIMIT]
    admission.release()
    assert admission.admit(0, 0.0) is None
    assert admission.overload.connections.active == 3


def test_pending_cap_comes_first_and_takes_no_slot() -> None:
    admission = Admission(runtime(10), FdReserve(None, OpenFds(0)), random.Random(1), max_pending=2)
    assert admission.admit(2, 0.0) is Refusal.PENDING
    assert admission.overload.connections.active == 0
    assert admission.admit(1, 0.0) is None


def test_overload_reject_follows_the_published_state() -> None:
    rt = runtime(10, reject_at=0.5)
    admission = Admission(rt, FdReserve(None, OpenFds(0)), random.Random(1))
    for _ in range(5):
        assert admission.admit(0, 0.0) is None
    rt.refresh(0.0, 0.0)  # pressure 5/10 reaches the threshold
    assert admission.admit(0, 0.0) is Refusal.OVERLOAD
    for _ in range(5):
        admission.release()
    rt.refresh(0.0, 1.0)
    assert admission.admit(0, 0.0) is None


def test_fd_reserve_refusal_takes_no_global_slot() -> None:
    admission = Admission(runtime(10), FdReserve(100, OpenFds(95)), random.Random(1))
    assert admission.admit(0, 0.0) is Refusal.FD_RESERVE
    assert admission.overload.connections.active == 0


def test_log_limiter_one_line_per_reason_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    limiter = LogLimiter(logging.getLogger("test.limit"), interval=1.0)
    with caplog.at_level(logging.WARNING, "test.limit"):
        written = [limiter.log(logging.WARNING, "a", t / 100, "refused %s", t) for t in range(100)]
        assert limiter.log(logging.WARNING, "b", 0.5, "other reason")
        assert limiter.log(logging.WARNING, "a", 1.0, "refused %s", "again")
    assert written.count(True) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused 0", "other reason", "refused again (99 more suppressed)"]
