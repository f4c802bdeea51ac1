"""The C allocator's share of idle memory: glibc's arena count and the free pages it keeps.

Owns two calls into glibc's malloc (docs/memory.md), made through ``ctypes`` on the process's
own C library; elsewhere (musl, macOS) both do nothing, since those allocators have neither
knob. Must not depend on anything of the proxy's.

- ``limit_arenas``: glibc gives each thread that allocates its own arena (up to 8 per core),
  and each arena keeps its freed pages. The proxy allocates on one thread (the event loop);
  libuv's resolver pool and grpc's threads allocate little, so two arenas serve them all
  without contention that matters. Must run before the first thread starts; a
  ``MALLOC_ARENA_MAX`` in the environment (glibc's own setting) wins.
- ``trim``: compiling a bootstrap allocates and frees megabytes (the decoded protobuf
  messages, YAML/JSON trees); glibc keeps freed chunks inside its heap. ``malloc_trim(0)``
  returns every whole free page to the kernel (``madvise``), once, after startup.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def _libc() -> ctypes.CDLL | None:
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas() -> None:
    """At most ``ARENAS`` malloc arenas for the whole process (glibc's ``M_ARENA_MAX``)."""
    libc = _libc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(M_ARENA_MAX, ARENAS)


def trim() -> None:
    """Give the free pages of every arena back to the kernel."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
