"""Types for the compiled least-request picker; behaviour is ``_least_request_py``'s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

class LeastRequest:
    def __init__(
        self,
        weights: Sequence[int],
        hosts: Sequence[Any],
        choice_count: int = 2,
        active_request_bias: float = 1.0,
        seed: int = 0,
    ) -> None: ...
    def __len__(self) -> int: ...
    def pick(self, hash: int = 0) -> int: ...
