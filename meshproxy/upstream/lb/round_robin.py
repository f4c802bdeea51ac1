"""Dispatcher for the round-robin picker: exports the compiled ``RoundRobin`` or its twin.

Owns only the choice; the behaviour lives in ``_round_robin_py.py`` (the reference) and
``_round_robin_c.pyx`` (the same algorithm in C), selected by :func:`meshproxy._ext.load_twin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy._ext import load_twin

__all__ = ("RoundRobin",)

if TYPE_CHECKING:
    from meshproxy.upstream.lb._round_robin_py import RoundRobin
else:
    RoundRobin = load_twin(__name__.rpartition(".")[0] + "._round_robin").RoundRobin
