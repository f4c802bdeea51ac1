"""`controlplane.file_watch.watch` on a real filesystem: notifications for a write, an atomic
rename over the file, a Kubernetes-style ``..data`` swap; nothing for a neighbour; polling when
the directory cannot be watched."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from controlplane.file_watch import Wake, watch

WAIT = 5.0
RETRY = 0.05


async def first_wake(paths: list[Path], action: Callable[[], object], poll_interval: float = 60) -> Wake:
    """The first wake-up of a new watch of ``paths`` while ``action`` is repeated: watchfiles
    starts watching in a thread and says nothing when it is ready, so the change is made again
    until it is seen (every repetition is the same change)."""
    wakes = aiter(watch(paths, poll_interval=poll_interval))
    pending = asyncio.ensure_future(anext(wakes))
    try:
        async with asyncio.timeout(WAIT):
            while True:
                action()
                done, _ = await asyncio.wait({pending}, timeout=RETRY)
                if done:
                    return pending.result()
    finally:
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        await wakes.aclose()  # type: ignore[attr-defined]


async def test_a_write_wakes_the_file_written(tmp_path: Path) -> None:
    mesh, other = tmp_path / "mesh.yaml", tmp_path / "resources.json"
    for path in (mesh, other):
        path.write_text("a")
    woken = await first_wake([mesh, other], lambda: mesh.write_text("b"))
    assert woken == Wake(frozenset({mesh}), notified=True)


async def test_a_rename_over_the_file_wakes_it(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("a")

    def save_as_an_editor_does() -> None:
        part = tmp_path / ".mesh.yaml.swp"
        part.write_text("b")
        os.replace(part, mesh)

    assert await first_wake([mesh], save_as_an_editor_does) == Wake(frozenset({mesh}), notified=True)


async def test_a_neighbour_wakes_nothing(tmp_path: Path) -> None:
    mesh, other = tmp_path / "mesh.yaml", tmp_path / "resources.json"
    for path in (mesh, other):
        path.write_text("a")

    def neighbour_then_other() -> None:
        (tmp_path / "neighbour.yaml").write_text("n")  # first, so that it is seen if it wakes
        other.write_text("b")

    woken = await first_wake([mesh, other], neighbour_then_other)
    assert woken == Wake(frozenset({other}), notified=True)


async def test_a_projected_volume_swap_wakes_every_file_of_the_directory(tmp_path: Path) -> None:
    mesh, other = tmp_path / "mesh.yaml", tmp_path / "resources.json"
    for path in (mesh, other):
        path.write_text("a")
    woken = await first_wake([mesh, other], lambda: (tmp_path / "..data_tmp").touch())
    assert woken == Wake(frozenset({mesh, other}), notified=True)


async def test_a_directory_that_cannot_be_watched_falls_back_to_polling(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet" / "mesh.yaml"
    woken = await first_wake([missing], lambda: None, poll_interval=0.01)
    assert woken == Wake(frozenset({missing}), notified=False)
