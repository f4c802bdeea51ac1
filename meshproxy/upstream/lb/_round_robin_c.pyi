"""Types for the compiled EDF weighted round robin; behaviour is ``_round_robin_py``'s."""

from __future__ import annotations

from collections.abc import Sequence

class RoundRobin:
    def __init__(self, weights: Sequence[int], offset: int = 0) -> None: ...
    def __len__(self) -> int: ...
    def pick(self) -> int: ...
