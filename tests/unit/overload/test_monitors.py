"""The OS readings behind the monitors, and raise_nofile_limit (finding 6)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap

import pytest

from meshproxy.overload.config import DOWNSTREAM_CONNECTIONS, EVENT_LOOP_LAG, FILE_DESCRIPTORS, Monitor
from meshproxy.overload.connections import DownstreamConnections
from meshproxy.overload.monitors import open_fds, raise_nofile_limit, read_pressure, rss_bytes


def test_open_fds_counts_each_descriptor_opened() -> None:
    before = open_fds()
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(25)]
    try:
        assert open_fds() == before + 25
    finally:
        for fd in fds:
            os.close(fd)
    assert open_fds() == before


def test_rss_grows_with_a_touched_buffer() -> None:
    before = rss_bytes()
    buffer = b"\x01" * (64 << 20)  # every page written
    assert rss_bytes() - before >= 60 << 20
    del buffer


def test_pressures_divide_by_the_maximum_or_the_soft_limit() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        with pytest.raises(ValueError, match="max_open_fds"):
            read_pressure(Monitor(FILE_DESCRIPTORS, None), loop_lag=0.0, connections=0)
    else:
        assert (
            read_pressure(Monitor(FILE_DESCRIPTORS, None), loop_lag=0.0, connections=0) == open_fds() / soft
        )
    assert read_pressure(Monitor(EVENT_LOOP_LAG, 0.5), loop_lag=0.25, connections=0) == 0.5
    assert read_pressure(Monitor(DOWNSTREAM_CONNECTIONS, 10), loop_lag=0.0, connections=15) == 1.5


def test_downstream_connections_refuse_at_the_limit() -> None:
    connections = DownstreamConnections(2)
    assert connections.try_open() and connections.try_open()
    assert not connections.try_open()
    connections.close()
    assert connections.try_open() and connections.active == 2
    unlimited = DownstreamConnections(None)
    assert all(unlimited.try_open() for _ in range(1000))


def _in_child(code: str) -> str:
    """Runs ``code`` in a fresh interpreter: limits set there do not leak into the test run."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_raise_nofile_limit_raises_the_soft_limit_to_the_hard_limit() -> None:
    out = _in_child(
        """
        import resource
        from meshproxy.overload.monitors import raise_nofile_limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        hard = 4096 if hard == resource.RLIM_INFINITY or hard > 4096 else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        print(raise_nofile_limit(), hard, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        print(raise_nofile_limit())
        """
    )
    first, second = out.splitlines()
    old_new, hard, now = first.rsplit(" ", 2)
    assert old_new == f"(64, {hard})" and now == hard
    assert second == f"({hard}, {hard})"  # nothing left to raise


def test_raise_nofile_limit_in_this_process_returns_old_and_new() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    old, new = raise_nofile_limit()
    try:
        assert old == soft and new >= old
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == new
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
