"""The ``use_original_dst`` hand-off: which listener serves a connection's original destination.

Owns Envoy's lookup (``ConnectionHandlerImpl::getBalancedHandlerByAddress``): the listener whose
address is exactly the restored destination (IP and port); else the one bound to the wildcard
address of the destination's family (``0.0.0.0`` / ``::``) on that port; for an IPv4
destination, then a dual-stack ``::`` listener on that port (``ipv4_compat``, which takes IPv4
too); else the accepting listener itself. Pure over the listeners' configs (anything with a
``config``); must not import asyncio or sockets. Cost: O(listeners) per redirected
connection, only on a listener with ``use_original_dst``.
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
    ipv4 = ":" not in host
    wildcard = "0.0.0.0" if ipv4 else "::"
    fallback = dual_stack = None
    for candidate in listeners:
        config = candidate.config
        if config.address.port != port:
            continue
        if config.address.host == host:
            return candidate
        if config.address.host == wildcard and fallback is None:
            fallback = candidate
        elif ipv4 and config.address.host == "::" and config.ipv4_compat and dual_stack is None:
            dual_stack = candidate
    for found in (fallback, dual_stack):
        if found is not None:
            return found
    return accepting
