"""What every picker twin shares: input validation and the splitmix64 generator.

Both twins of each picker call these validators at construction, so the compiled and the Python
twin reject the same inputs with the same messages; the compiled twins then copy the validated
values into C arrays. :func:`splitmix64` is the Python reference of the generator the compiled
twins inline from ``_native.pxd``; the two must stay bit-identical (a test checks sequences).
Depends only on the standard library and the round-robin twin's weight validation.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from meshproxy.upstream.lb._round_robin_py import MAX_WEIGHT, validated

__all__ = ("MASK64", "MAX_WEIGHT", "check_hash", "keys_bytes", "seed_state", "splitmix64", "weights_list")

MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15


def weights_list(weights: Sequence[int]) -> list[int]:
    """The weights as a list of ints in 1..MAX_WEIGHT; ValueError when there are none."""
    checked, _ = validated(weights, 0)
    if not checked:
        raise ValueError("weights is empty; a picker needs at least one host")
    return checked


def seed_state(seed: int) -> int:
    """The generator's initial state: the seed as an unsigned 64-bit integer (two's complement)."""
    return operator.index(seed) & MASK64


def keys_bytes(keys: Sequence[str], count: int) -> list[bytes]:
    """Each hash key as UTF-8; there must be ``count`` of them, none empty."""
    if len(keys) != count:
        raise ValueError(f"keys has {len(keys)} entries but weights has {count}; give one key per host")
    out = []
    for i, key in enumerate(keys):
        if not isinstance(key, str) or not key:
            raise ValueError(f"keys[{i}] is {key!r}; a hash key must be a non-empty string")
        try:
            out.append(key.encode())
        except UnicodeEncodeError as exc:
            raise ValueError(f"keys[{i}] is not encodable as UTF-8 ({exc.reason})") from None
    return out


def check_hash(hash: int) -> int:
    """A request hash as the compiled twins accept it: an int in [0, 2**64)."""
    h = hash if type(hash) is int else operator.index(hash)
    if h < 0:
        raise OverflowError(f"hash is {h}; a request hash must be in [0, 2**64)")
    if h > MASK64:
        raise OverflowError(f"hash is {h}; a request hash must be in [0, 2**64)")
    return h


def splitmix64(state: int) -> tuple[int, int]:
    """One step of splitmix64 (Steele, Lea, Flood 2014): the next state and its 64-bit output."""
    state = (state + _GAMMA) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)
