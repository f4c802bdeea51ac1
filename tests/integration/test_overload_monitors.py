"""The overload runtime against real readings: each monitor's action fires at its threshold
and recovers. The load is real (descriptors opened, a buffer touched, the loop blocked,
connections counted); every wait is an event with a bound, and nothing asserts on timing."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from meshproxy.overload.config import (
    DOWNSTREAM_CONNECTIONS,
    EVENT_LOOP_LAG,
    FILE_DESCRIPTORS,
    FIXED_HEAP,
    STOP_ACCEPTING_CONNECTIONS,
    STOP_ACCEPTING_REQUESTS,
    Action,
    Monitor,
    OverloadConfig,
    Trigger,
)
from meshproxy.overload.monitors import open_fds, rss_bytes
from meshproxy.overload.runtime import OverloadRuntime
from meshproxy.overload.state import OverloadState

BOUND = 10.0  # seconds any one transition may take before the test fails


class Watch:
    """Sets an event when the runtime publishes a state that satisfies a predicate."""

    def __init__(self, runtime: OverloadRuntime) -> None:
        self.runtime = runtime
        self.waiters: list[tuple[Callable[[OverloadState], bool], asyncio.Event]] = []
        runtime.subscribe(self._on_state)

    def _on_state(self, state: OverloadState) -> None:
        for predicate, event in self.waiters:
            if predicate(state):
                event.set()

    async def until(self, predicate: Callable[[OverloadState], bool]) -> None:
        if predicate(self.runtime.state):
            return
        event = asyncio.Event()
        self.waiters.append((predicate, event))
        await asyncio.wait_for(event.wait(), BOUND)


def shedding(state: OverloadState) -> bool:
    return state.shed_fraction == 1.0


def normal(state: OverloadState) -> bool:
    return state.shed_fraction == 0.0 and state.accepting


@pytest.fixture
async def start() -> AsyncIterator[Callable[[OverloadConfig], tuple[OverloadRuntime, Watch]]]:
    runtimes: list[OverloadRuntime] = []

    def make(config: OverloadConfig) -> tuple[OverloadRuntime, Watch]:
        runtime = OverloadRuntime(config)
        watch = Watch(runtime)
        runtime.start()
        runtimes.append(runtime)
        return runtime, watch

    yield make
    for runtime in runtimes:
        await runtime.close()


def shed_on(monitor: Monitor, threshold: float) -> OverloadConfig:
    return OverloadConfig(
        0.01, (monitor,), (Action(STOP_ACCEPTING_REQUESTS, (Trigger(monitor.name, threshold),)),)
    )


async def test_file_descriptor_monitor_fires_and_recovers(start: Callable) -> None:
    base = open_fds()
    # Fires once 30 more descriptors are open; the test opens 40.
    runtime, watch = start(shed_on(Monitor(FILE_DESCRIPTORS, base + 40), (base + 30) / (base + 40)))
    await asyncio.sleep(0)  # one turn of the loop: the runtime's first reading
    assert runtime.stats.resources[FILE_DESCRIPTORS].pressure > 0 and normal(runtime.state)
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(40)]
    try:
        await watch.until(shedding)
    finally:
        for fd in fds:
            os.close(fd)
    await watch.until(normal)
    stats = runtime.stats.actions[STOP_ACCEPTING_REQUESTS]
    assert stats.activations == 1 and stats.active == 0


async def test_rss_monitor_fires_and_recovers(start: Callable) -> None:
    size = 96 << 20
    base = rss_bytes()
    # Fires once resident memory is 48 MiB above where it started; the buffer adds 96 MiB.
    runtime, watch = start(
        shed_on(Monitor(FIXED_HEAP, base + 2 * size), (base + size // 2) / (base + 2 * size))
    )
    buffer = b"\x01" * size  # every page written, so resident
    await watch.until(shedding)
    del buffer  # an allocation this large is an mmap: freeing it returns it to the kernel
    await watch.until(normal)
    assert runtime.stats.actions[STOP_ACCEPTING_REQUESTS].activations == 1


async def test_event_loop_lag_monitor_fires_and_recovers(start: Callable) -> None:
    config = OverloadConfig(
        0.01,
        (Monitor(EVENT_LOOP_LAG, 0.1),),
        (Action(STOP_ACCEPTING_CONNECTIONS, (Trigger(EVENT_LOOP_LAG, 1.0),)),),
    )
    runtime, watch = start(config)
    await asyncio.sleep(0)  # one turn of the loop: the runtime reads once and arms its timer
    # Block the loop for 0.5 s (five times max_lag): the refresh timer fires that late.
    threading.Event().wait(0.5)
    await watch.until(lambda s: not s.accepting)
    assert runtime.stats.resources[EVENT_LOOP_LAG].pressure >= 100
    await watch.until(normal)
    assert runtime.stats.actions[STOP_ACCEPTING_CONNECTIONS].activations == 1


async def test_downstream_connections_monitor_fires_and_recovers(start: Callable) -> None:
    runtime, watch = start(shed_on(Monitor(DOWNSTREAM_CONNECTIONS, 10), 0.8))
    connections = runtime.connections
    assert all(connections.try_open() for _ in range(8))
    await watch.until(shedding)
    assert connections.try_open() and connections.try_open()
    assert not connections.try_open()  # the hard limit, enforced at accept
    for _ in range(10):
        connections.close()
    await watch.until(normal)


async def test_without_monitors_nothing_runs_and_the_state_is_normal() -> None:
    runtime = OverloadRuntime(None)
    runtime.start()
    assert runtime._task is None and normal(runtime.state)
    assert runtime.connections.limit is None
    await runtime.close()
