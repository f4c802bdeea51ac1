"""The ``use_original_dst`` hand-off: which listener serves a connection's original destination.

Owns Envoy's lookup (``ConnectionHandlerImpl::getBalancedHandlerByAddress``): the listener whose
address is exactly the restored destination (IP and port); else the one bound to the wildcard
address of the destination's family (``0.0.0.0`` / ``::``) on that port; else the accepting
listener itself. Pure over the listeners' configs (anything with a ``config.address``); must
not import asyncio or sockets. Cost: O(listeners) per redirected connection, only on a listener
with ``use_original_dst``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from meshproxy.config.model import Listener


class HasConfig(Protocol):
    @property
    def config(self) -> Listener: ...


T = TypeVar("T", bound=HasConfig)


def handoff_target(accepting: T, listeners: Iterable[T], destination: tuple[str, int]) -> T:
    """The listener that serves ``destination`` (host, port), ``accepting`` when none does."""
    host, port = destination
    wildcard = "::" if ":" in host else "0.0.0.0"
    fallback = None
    for candidate in listeners:
        address = candidate.config.address
        if address.port != port:
            continue
        if address.host == host:
            return candidate
        if address.host == wildcard and fallback is None:
            fallback = candidate
    return fallback if fallback is not None else accepting
