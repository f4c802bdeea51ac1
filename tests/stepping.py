"""Runs a step generator (the compilers' and builders' ``..._steps``/``build`` forms) to its
end for a test: how many steps it took, and what it returned.

Imported as ``from stepping import run_steps`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")


def run_steps(steps: Generator[None, None, T]) -> tuple[int, T]:
    """(steps taken, the generator's return value)."""
    count = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return count, done.value
        count += 1
