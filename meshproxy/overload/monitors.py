"""The resource readings: small functions that ask the OS (or a counter) for one value.

Owns how each monitor is measured and turned into a pressure (value / maximum):
``fixed_heap`` is the process's resident set size from /proc/self/statm (not the allocator's
heap: CPython has no single heap to ask, and RSS is what the kernel's OOM killer counts);
file descriptors are the entries of /proc/self/fd against the soft RLIMIT_NOFILE (or a
configured maximum); the event-loop lag and active downstream connections are measured by the
runtime and passed in. Also ``raise_nofile_limit``, for startup. Each read costs one or two
system calls (/proc/self/fd: one directory listing, linear in open descriptors).
Must not hold policy (``manager.py``) or import asyncio.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import time

from meshproxy.overload.config import EVENT_LOOP_LAG, FILE_DESCRIPTORS, FIXED_HEAP, Monitor

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """The resident set size of this process; OSError where /proc is not mounted."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


def open_fds() -> int:
    """Open file descriptors of this process, not counting the one the listing itself holds."""
    return len(os.listdir("/proc/self/fd")) - 1


def nofile_soft_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def read_pressure(monitor: Monitor, *, loop_lag: float, connections: int) -> float:
    """The monitor's pressure now; OSError or ValueError when it cannot be read."""
    if monitor.name == FIXED_HEAP:
        value: float = rss_bytes()
    elif monitor.name == FILE_DESCRIPTORS:
        value = open_fds()
    elif monitor.name == EVENT_LOOP_LAG:
        value = loop_lag
    else:  # DOWNSTREAM_CONNECTIONS
        value = connections
    maximum = monitor.maximum
    if maximum is None:  # file descriptors without max_open_fds
        maximum = nofile_soft_limit()
        if maximum == resource.RLIM_INFINITY:
            raise ValueError("RLIMIT_NOFILE is unlimited; give max_open_fds")
    return value / maximum


def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc: musl, say
        return None


_MALLOC_TRIM = _malloc_trim()


def return_free_memory() -> tuple[int, int, float] | None:
    """Hands the C allocator's free pages back to the kernel (glibc ``malloc_trim(0)``; None
    elsewhere, where there is nothing to call). OpenSSL allocates each handshake's state (tens
    of KiB: key shares, ML-KEM keys, buffers) and the codecs their buffers with malloc; once a
    burst of them is freed, glibc keeps the pages in its arenas and the resident set stays at
    the burst's peak (findings 7 and 9). Returns the RSS before and after (0 where /proc is not
    mounted) and the seconds the trim took: a walk of the arenas, milliseconds; the caller
    (``trim.py``'s policy) decides when it is worth it."""
    if _MALLOC_TRIM is None:
        return None
    before = _rss_or_zero()
    started = time.perf_counter()
    _MALLOC_TRIM(0)
    took = time.perf_counter() - started
    return before, _rss_or_zero(), took


def _rss_or_zero() -> int:
    try:
        return rss_bytes()
    except OSError:
        return 0


def raise_nofile_limit() -> tuple[int, int]:
    """Raises the soft RLIMIT_NOFILE to the hard limit (finding 6: a proxy holds two
    descriptors per proxied connection, and 1024 is a common default soft limit; Linux keeps
    the hard limit at or below fs.nr_open). Returns (old, new) soft limits for the startup log;
    they are equal when there was nothing to raise or the kernel refused."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        return soft, soft
    return soft, hard
