"""Dispatcher for the ring-hash picker and XXH64: exports the compiled ones or their twins.

Owns only the choice; the behaviour lives in ``_ring_hash_py.py`` (the reference) and
``_ring_hash_c.pyx``, selected by :func:`meshproxy._ext.load_twin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy._ext import load_twin

__all__ = ("RingHash", "xxhash64")

if TYPE_CHECKING:
    from meshproxy.upstream.lb._ring_hash_py import RingHash, xxhash64
else:
    _twin = load_twin(__name__.rpartition(".")[0] + "._ring_hash")
    RingHash, xxhash64 = _twin.RingHash, _twin.xxhash64
