"""When freed heap goes back to the kernel (``overload/trim.py``'s rules), and the trim itself."""

from __future__ import annotations

import platform

from meshproxy.overload.connections import DownstreamConnections
from meshproxy.overload.monitors import return_free_memory
from meshproxy.overload.trim import MemoryTrim


def test_a_burst_that_ends_is_trimmed_once() -> None:
    trim = MemoryTrim(drop=32, abandoned=256, interval=2.0)
    assert not trim.due(0.0, 51, 51, 0)  # the burst is on
    assert not trim.due(1.0, 30, 51, 0)  # 21 left: not yet a drop of 32
    assert trim.due(2.0, 1, 30, 0)  # 50 gone since the peak (rule 3)
    assert not trim.due(10.0, 1, 1, 0)  # the marks restarted at the trim (rule 5)


def test_steady_churn_never_trims() -> None:
    trim = MemoryTrim(drop=32, abandoned=256, interval=2.0)
    assert not any(trim.due(float(t), 20 + t % 5, 25, 0) for t in range(100))


def test_a_burst_between_two_ticks_is_seen_through_the_high_water_mark() -> None:
    trim = MemoryTrim(drop=32, abandoned=256, interval=2.0)
    connections = DownstreamConnections(None)
    assert not trim.due(0.0, connections.active, connections.take_high_water(), 0)
    for _ in range(40):
        assert connections.try_open()
    for _ in range(40):
        connections.close()
    assert trim.due(1.0, connections.active, connections.take_high_water(), 0)
    assert connections.take_high_water() == 0  # the mark restarted from the open count


def test_a_handshake_flood_is_trimmed_without_a_connection_peak() -> None:
    trim = MemoryTrim(drop=32, abandoned=256, interval=2.0)
    assert not trim.due(0.0, 3, 5, 255)
    assert trim.due(1.0, 3, 5, 256)
    assert not trim.due(5.0, 3, 5, 300)
    assert trim.due(6.0, 3, 5, 512)


def test_the_interval_holds_a_due_trim_back_until_it_has_passed() -> None:
    trim = MemoryTrim(drop=32, abandoned=256, interval=2.0)
    assert trim.due(0.0, 0, 40, 0)
    assert not trim.due(1.0, 0, 40, 0)  # a second burst ended within the interval (rule 4) ...
    assert trim.due(2.0, 0, 0, 0)  # ... and is trimmed on the first tick after it


def test_a_removed_listener_does_not_hide_the_next_flood() -> None:
    trim = MemoryTrim(drop=32, abandoned=256, interval=2.0)
    assert trim.due(0.0, 0, 0, 600)
    assert not trim.due(5.0, 0, 0, 100)  # a listener holding 500 of them went away
    assert trim.due(6.0, 0, 0, 356)


def test_return_free_memory_trims_on_glibc_and_is_a_no_op_elsewhere() -> None:
    returned = return_free_memory()
    if platform.libc_ver()[0] != "glibc":  # musl and others have no malloc_trim to call
        assert returned is None
        return
    assert returned is not None
    before, after, took = returned
    assert before > 0 and after > 0 and took >= 0.0
