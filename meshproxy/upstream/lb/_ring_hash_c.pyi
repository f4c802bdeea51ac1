"""Types for the compiled ring hash and XXH64; behaviour is ``_ring_hash_py``'s."""

from __future__ import annotations

from collections.abc import Sequence

def xxhash64(data: bytes, seed: int = 0) -> int: ...

class RingHash:
    def __init__(
        self,
        keys: Sequence[str],
        weights: Sequence[int],
        minimum_ring_size: int = 1024,
        maximum_ring_size: int = 8388608,
    ) -> None: ...
    def __len__(self) -> int: ...
    @property
    def ring_size(self) -> int: ...
    def pick(self, hash: int) -> int: ...
