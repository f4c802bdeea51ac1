"""The worker restart delay (``workers/restart.py``): exponential, capped, forgiven by a stable run."""

from __future__ import annotations

from meshproxy.workers.restart import Backoff


def test_crashes_in_a_row_double_the_delay_up_to_the_cap() -> None:
    backoff = Backoff(base=0.1, cap=1.0, stable=30.0)
    now = 100.0
    delays = []
    for _ in range(6):
        backoff.started(now)
        now += 1.0  # ran one second: not stable
        delays.append(backoff.delay(now))
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_a_stable_run_starts_the_count_again() -> None:
    backoff = Backoff(base=0.1, cap=10.0, stable=30.0)
    backoff.started(0.0)
    assert backoff.delay(1.0) == 0.1
    backoff.started(1.1)
    assert backoff.delay(2.0) == 0.2
    backoff.started(2.2)
    assert backoff.delay(40.0) == 0.1  # ran 37.8s


def test_a_worker_that_never_started_keeps_backing_off() -> None:
    backoff = Backoff(base=0.1, cap=10.0, stable=30.0)
    assert [backoff.delay(t) for t in (0.0, 100.0, 200.0)] == [0.1, 0.2, 0.4]
