"""The overload manager's core: readings and ``now`` in, action states and stats out; no
sockets, no clock. Examples for each rule, then hypothesis properties over any pressures."""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from meshproxy.overload.config import (
    DISABLE_HTTP_KEEPALIVE,
    EVENT_LOOP_LAG,
    FILE_DESCRIPTORS,
    FIXED_HEAP,
    REDUCE_TIMEOUTS,
    REJECT_INCOMING_CONNECTIONS,
    STOP_ACCEPTING_CONNECTIONS,
    STOP_ACCEPTING_REQUESTS,
    Action,
    Monitor,
    OverloadConfig,
    TimerMinimum,
    Trigger,
)
from meshproxy.overload.manager import OverloadManager, trigger_value
from meshproxy.overload.state import NORMAL
from meshproxy.overload.stats import OverloadCollector, OverloadStats

MONITORS = (Monitor(FIXED_HEAP, 100.0), Monitor(FILE_DESCRIPTORS, None), Monitor(EVENT_LOOP_LAG, 0.5))


def manager(*actions: Action, refresh: float = 0.25) -> OverloadManager:
    return OverloadManager(OverloadConfig(refresh, MONITORS, actions), OverloadStats())


def test_threshold_trigger_fires_at_its_value_and_recovers() -> None:
    m = manager(Action(STOP_ACCEPTING_REQUESTS, (Trigger(FIXED_HEAP, 0.9),)))
    assert m.update({FIXED_HEAP: 0.89}, now=0.0).shed_fraction == 0.0
    state = m.update({FIXED_HEAP: 0.9}, now=1.0)
    assert state.shed_fraction == 1.0 and state.shed_request(random.Random(1))
    stats = m.stats.actions[STOP_ACCEPTING_REQUESTS]
    assert (stats.active, stats.scale_percent, stats.activations) == (1, 100, 1)
    assert m.stats.resources[FIXED_HEAP].pressure == 90
    assert m.update({FIXED_HEAP: 0.5}, now=2.0) == NORMAL
    assert (stats.active, stats.scale_percent, stats.activations) == (0, 0, 1)


def test_scaled_trigger_ramps_and_actions_take_the_largest_trigger() -> None:
    m = manager(Action(DISABLE_HTTP_KEEPALIVE, (Trigger(FIXED_HEAP, 0.5, 0.9), Trigger(EVENT_LOOP_LAG, 1.0))))
    assert m.update({FIXED_HEAP: 0.5, EVENT_LOOP_LAG: 0.0}, now=0.0).keepalive_close_fraction == 0.0
    state = m.update({FIXED_HEAP: 0.7, EVENT_LOOP_LAG: 0.0}, now=1.0)
    assert math.isclose(state.keepalive_close_fraction, 0.5)
    assert m.stats.actions[DISABLE_HTTP_KEEPALIVE].active == 0
    assert m.stats.actions[DISABLE_HTTP_KEEPALIVE].scale_percent in (49, 50)  # floor of 0.5 in floats
    assert m.update({FIXED_HEAP: 0.7, EVENT_LOOP_LAG: 2.0}, now=2.0).keepalive_close_fraction == 1.0
    assert m.update({FIXED_HEAP: 0.95, EVENT_LOOP_LAG: 0.0}, now=3.0).keepalive_close_fraction == 1.0


def test_each_action_drives_its_own_field() -> None:
    minimum = TimerMinimum("HTTP_DOWNSTREAM_STREAM_IDLE", min_scale=0.2)
    m = manager(
        Action(STOP_ACCEPTING_CONNECTIONS, (Trigger(FIXED_HEAP, 0.9),)),
        Action(REJECT_INCOMING_CONNECTIONS, (Trigger(FIXED_HEAP, 0.5, 0.9),)),
        Action(REDUCE_TIMEOUTS, (Trigger(FIXED_HEAP, 0.5, 0.9),), (minimum,)),
    )
    state = m.update({FIXED_HEAP: 0.7}, now=0.0)
    assert state.accepting
    assert math.isclose(state.reject_fraction, 0.5)
    assert math.isclose(state.scale_timeout("HTTP_DOWNSTREAM_STREAM_IDLE", 10.0), 2.0 + 8.0 * 0.5)
    assert state.scale_timeout("HTTP_DOWNSTREAM_CONNECTION_IDLE", 10.0) == 10.0  # not configured
    state = m.update({FIXED_HEAP: 1.2}, now=1.0)
    assert not state.accepting and state.reject_fraction == 1.0
    assert math.isclose(state.scale_timeout("HTTP_DOWNSTREAM_STREAM_IDLE", 10.0), 2.0)
    assert state.shed_fraction == 0.0 and state.keepalive_close_fraction == 0.0


def test_failed_readings_are_counted_and_keep_the_last_pressure() -> None:
    m = manager(Action(STOP_ACCEPTING_REQUESTS, (Trigger(FILE_DESCRIPTORS, 0.8),)))
    assert m.update({FILE_DESCRIPTORS: 0.9}, now=0.0).shed_fraction == 1.0
    for bad in (None, float("nan"), -1.0):
        assert m.update({FILE_DESCRIPTORS: bad}, now=1.0).shed_fraction == 1.0
    assert m.update({}, now=2.0).shed_fraction == 1.0  # a monitor missing from the readings
    assert m.stats.resources[FILE_DESCRIPTORS].failed_updates == 4
    assert m.stats.resources[FIXED_HEAP].failed_updates == 5  # never given in this test
    assert m.update({FILE_DESCRIPTORS: 0.1}, now=3.0).shed_fraction == 0.0


def test_next_update_is_one_refresh_after_the_last() -> None:
    m = manager(refresh=0.25)
    assert m.next_update() == 0.0
    m.update({}, now=10.0)
    assert m.next_update() == 10.25


def test_state_object_is_kept_while_nothing_changes() -> None:
    m = manager(Action(STOP_ACCEPTING_REQUESTS, (Trigger(FIXED_HEAP, 0.9),)))
    first = m.update({FIXED_HEAP: 0.95}, now=0.0)
    assert m.update({FIXED_HEAP: 0.99}, now=1.0) is first


def test_stats_are_exported_with_envoy_names_and_as_prometheus_families() -> None:
    m = manager(Action(STOP_ACCEPTING_REQUESTS, (Trigger(FIXED_HEAP, 0.9),)))
    m.update({FIXED_HEAP: 0.95, FILE_DESCRIPTORS: 0.25, EVENT_LOOP_LAG: None}, now=0.0)
    flat = m.stats.flat()
    assert flat[f"overload.{STOP_ACCEPTING_REQUESTS}.active"] == 1
    assert flat[f"overload.{STOP_ACCEPTING_REQUESTS}.scale_percent"] == 100
    assert flat[f"overload.{FIXED_HEAP}.pressure"] == 95
    assert flat[f"overload.{FILE_DESCRIPTORS}.pressure"] == 25
    assert flat[f"overload.{EVENT_LOOP_LAG}.failed_updates"] == 1
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OverloadCollector(m.stats))
    text = generate_latest(registry).decode()
    assert f'meshproxy_overload_action_active{{action="{STOP_ACCEPTING_REQUESTS}"}} 1.0' in text
    assert f'meshproxy_overload_action_activations_total{{action="{STOP_ACCEPTING_REQUESTS}"}} 1.0' in text
    assert f'meshproxy_overload_resource_pressure{{resource="{FIXED_HEAP}"}} 95.0' in text
    assert f'meshproxy_overload_resource_failed_updates_total{{resource="{EVENT_LOOP_LAG}"}} 1.0' in text


def test_draws_follow_the_fraction() -> None:
    rng = random.Random(7)
    assert not NORMAL.shed_request(rng) and not NORMAL.close_keepalive(rng)
    assert not NORMAL.reject_connection(rng)
    m = manager(Action(STOP_ACCEPTING_REQUESTS, (Trigger(FIXED_HEAP, 0.0, 1.0),)))
    state = m.update({FIXED_HEAP: 0.25}, now=0.0)
    shed = sum(state.shed_request(rng) for _ in range(4000))
    assert 800 < shed < 1200  # 1000 expected; the seed makes this exact and repeatable


def test_scale_timeout_with_an_absolute_minimum_never_lengthens() -> None:
    m = manager(
        Action(REDUCE_TIMEOUTS, (Trigger(FIXED_HEAP, 0.9),), (TimerMinimum("TRANSPORT_SOCKET_CONNECT", 5.0),))
    )
    state = m.update({FIXED_HEAP: 1.0}, now=0.0)
    assert state.scale_timeout("TRANSPORT_SOCKET_CONNECT", 30.0) == 5.0
    assert state.scale_timeout("TRANSPORT_SOCKET_CONNECT", 2.0) == 2.0  # minimum above the maximum
    assert state.scale_timeout("TRANSPORT_SOCKET_CONNECT", 0.0) == 0.0  # disabled stays disabled


# --------------------------------------------------------------------------- properties

pressures = st.floats(min_value=0.0, max_value=3.0, allow_nan=False)
units = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def triggers(draw: st.DrawFn) -> Trigger:
    monitor = draw(st.sampled_from([m.name for m in MONITORS]))
    if draw(st.booleans()):
        return Trigger(monitor, draw(units))
    low = draw(st.floats(min_value=0.0, max_value=0.99, allow_nan=False))
    high = draw(st.floats(min_value=low, max_value=1.0, exclude_min=True, allow_nan=False))
    return Trigger(monitor, low, high)


@given(
    st.lists(triggers(), min_size=1, max_size=3, unique_by=lambda t: t.monitor),
    st.fixed_dictionaries({m.name: pressures for m in MONITORS}),
)
def test_action_is_active_iff_some_trigger_saturates(trigger_list: list[Trigger], readings: dict) -> None:
    m = manager(Action(STOP_ACCEPTING_CONNECTIONS, tuple(trigger_list)))
    state = m.update(readings, now=0.0)
    saturated = any(
        readings[t.monitor] >= (t.threshold if t.saturation is None else t.saturation) for t in trigger_list
    )
    assert state.accepting is not saturated
    assert m.stats.actions[STOP_ACCEPTING_CONNECTIONS].active == int(saturated)


@given(triggers(), pressures, pressures)
def test_trigger_value_is_monotone_and_bounded(trigger: Trigger, a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert 0.0 <= trigger_value(trigger, low) <= trigger_value(trigger, high) <= 1.0


@given(triggers(), pressures, st.lists(pressures, max_size=5))
def test_recovery_when_pressure_drops(trigger: Trigger, peak: float, path: list[float]) -> None:
    """After any history, a reading of 0 returns to NORMAL, unless a threshold trigger fires
    at 0 (pressure >= 0 always holds)."""
    m = manager(Action(STOP_ACCEPTING_REQUESTS, (trigger,)))
    for now, pressure in enumerate([peak, *path]):
        m.update({trigger.monitor: pressure}, now=float(now))
    recovered = m.update({trigger.monitor: 0.0}, now=99.0)
    fires_at_zero = trigger.saturation is None and trigger.threshold == 0.0
    assert (recovered == NORMAL) is not fires_at_zero
