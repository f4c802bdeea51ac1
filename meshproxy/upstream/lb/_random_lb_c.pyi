"""Types for the compiled weighted random picker; behaviour is ``_random_lb_py``'s."""

from __future__ import annotations

from collections.abc import Sequence

class RandomLb:
    def __init__(self, weights: Sequence[int], seed: int = 0) -> None: ...
    def __len__(self) -> int: ...
    def pick(self, hash: int = 0) -> int: ...
