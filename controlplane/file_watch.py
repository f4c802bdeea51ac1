"""Wake-ups for changed config files: filesystem notifications first, polling as the fallback.

Owns `watch`, an async iterator of `Wake`: which of the watched files may have changed, and
whether a notification said so. With the ``watchfiles`` package (inotify on Linux, FSEvents,
ReadDirectoryChangesW) it watches each file's directory, not the file: editors save by writing a
temporary file and renaming it over the original, which replaces the inode a watch on the file
would follow, while a watch on the directory sees the name come back. Kubernetes' projected
volumes swap a ``..data`` symlink instead, so an event on a ``..``-prefixed name wakes every file
of that directory. A save is several events (truncate, write, rename); they are batched over
`STEP_MS`, so one save costs one wake-up, `STEP_MS` to twice that after it (`DEBOUNCE_MS` bounds
the wait under a stream of writes).

When notifications cannot be had (no inotify instance or watch left, a directory that cannot
be watched) it logs why, once, and wakes every ``poll_interval`` seconds
with every file, ``notified`` false: the caller compares the files' stamps.

A wake-up is a hint, not a verdict: the caller reads the file and decides whether its content
changed, so a spurious wake-up costs one read.

Must not depend on: the config formats, the cache, the servers.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import watchfiles

log = logging.getLogger(__name__)

STEP_MS = 10
DEBOUNCE_MS = 200


@dataclass(frozen=True, slots=True)
class Wake:
    paths: frozenset[Path]
    notified: bool  # a filesystem notification named them (else: a poll, compare stamps)


async def watch(paths: Sequence[Path], *, poll_interval: float) -> AsyncIterator[Wake]:
    """Wakes for ``paths`` until cancelled; nothing to watch ends at once."""
    if not paths:
        return
    files = {Path(os.path.abspath(p)): p for p in paths}
    reason = "the notifications ended"
    try:
        async for wake in _notifications(files):
            yield wake
    except (OSError, RuntimeError) as exc:  # watchfiles raises both when it cannot watch
        reason = f"{type(exc).__name__}: {exc}"
    log.warning(
        "no filesystem notifications for %s (%s); polling every %gs instead",
        ", ".join(map(str, paths)),
        reason,
        poll_interval,
    )
    everything = frozenset(paths)
    while True:
        await asyncio.sleep(poll_interval)
        yield Wake(everything, notified=False)


async def _notifications(files: dict[Path, Path]) -> AsyncIterator[Wake]:
    def keep(_: Any, name: str) -> bool:
        return bool(_woken(files, {Path(name)}))

    directories = sorted({str(f.parent) for f in files})
    async for changes in watchfiles.awatch(
        *directories, watch_filter=keep, step=STEP_MS, debounce=DEBOUNCE_MS, recursive=False
    ):
        if woken := _woken(files, {Path(name) for _, name in changes}):
            yield Wake(woken, notified=True)


def _woken(files: dict[Path, Path], changed: set[Path]) -> frozenset[Path]:
    """The watched files (as given) that events on the absolute paths ``changed`` concern."""
    swapped = {c.parent for c in changed if c.name.startswith("..")}  # a projected volume's update
    return frozenset(g for a, g in files.items() if a in changed or a.parent in swapped)
