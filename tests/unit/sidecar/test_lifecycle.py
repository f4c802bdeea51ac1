"""DrainHold, the shutdown order's policy, without a clock or sockets: each rule of
``meshproxy/sidecar/lifecycle.py`` driven by the ``now`` and counts a test passes in."""

from __future__ import annotations

import pytest

from meshproxy.sidecar.lifecycle import POLL, DrainHold, HoldEnd, Termination

POLICY = Termination(quiet=1.0, drain_duration=5.0)


def run(hold: DrainHold, looks: list[tuple[float, int, int]]) -> list[float | None]:
    return [hold.observe(now, open_, accepted) for now, open_, accepted in looks]


def test_quiet_from_the_start_ends_after_the_quiet_period() -> None:
    hold = DrainHold(POLICY, now=100.0, accepted=7)
    assert run(hold, [(100.0, 0, 7), (100.5, 0, 7)]) == [100.0 + POLL, 100.5 + POLL]
    assert hold.ended is None
    assert hold.observe(101.0, 0, 7) is None
    assert hold.ended is HoldEnd.QUIET


def test_an_open_connection_restarts_the_quiet_period() -> None:
    hold = DrainHold(POLICY, now=0.0, accepted=0)
    run(hold, [(0.0, 0, 0), (0.9, 2, 0), (1.5, 0, 0), (2.4, 0, 0)])
    assert hold.ended is None  # quiet since 1.5 only
    assert hold.observe(2.5, 0, 0) is None
    assert hold.ended is HoldEnd.QUIET


def test_a_connection_that_came_and_went_between_looks_counts_as_activity() -> None:
    hold = DrainHold(POLICY, now=0.0, accepted=3)
    run(hold, [(0.0, 0, 3), (0.9, 0, 4)])  # one accepted and closed in between
    assert hold.observe(1.5, 0, 4) is not None  # quiet since 1.5, not since 0.0
    assert hold.observe(2.4, 0, 4) is not None
    assert hold.observe(2.5, 0, 4) is None
    assert hold.ended is HoldEnd.QUIET


def test_busy_outbound_ends_at_the_drain_duration() -> None:
    hold = DrainHold(POLICY, now=10.0, accepted=0)
    nexts = run(hold, [(10.0 + t / 10, 1, 0) for t in range(50)])
    assert None not in nexts
    assert max(n for n in nexts if n is not None) <= 15.0  # never sleeps past the deadline
    assert hold.observe(15.0, 1, 0) is None
    assert hold.ended is HoldEnd.DURATION


def test_a_second_signal_ends_the_hold_at_the_next_look() -> None:
    hold = DrainHold(POLICY, now=0.0, accepted=0)
    assert hold.observe(0.0, 3, 0) is not None
    hold.hurry()
    assert hold.observe(0.01, 3, 0) is None
    assert hold.ended is HoldEnd.SIGNAL
    assert hold.observe(0.02, 0, 0) is None  # ended stays ended
    assert hold.ended is HoldEnd.SIGNAL


@pytest.mark.parametrize(
    ("quiet", "duration", "ended"), [(0.0, 5.0, HoldEnd.QUIET), (1.0, 0.0, HoldEnd.DURATION)]
)
def test_zero_settings_end_at_the_first_look(quiet: float, duration: float, ended: HoldEnd) -> None:
    hold = DrainHold(Termination(quiet, duration), now=0.0, accepted=0)
    assert hold.observe(0.0, 0, 0) is None
    assert hold.ended is ended
