"""The runtime side of envoy.filters.network.connection_limit: one admission counter per chain.

Owns the count of connections one filter chain holds and the stats of its stat prefix. The
listener (``listener/runtime.py``) asks ``admit`` when it hands a connection to the chain, and calls
``release`` exactly once for each admitted connection when it ends, whichever way it ends
(codec connection closed, codec choice abandoned, TLS handshake refused). As in Envoy the count
is per filter chain config, across every connection that chain serves; a ``ChainLimit`` is
carried across a listener update while the chain's name and limit stay the same.

Must not depend on asyncio or sockets: refusing (closing after ``delay``) is the listener's job.
It sits below ``listener/``, ``hcm/`` and ``tcp/`` because their per-chain contexts carry it and
the HCM must not import the listener package.
"""

from __future__ import annotations

from meshproxy.config.model import ConnectionLimit
from meshproxy.stats import ConnectionLimitStats


class ChainLimit:
    """Envoy's ``canCreate/inc/dec`` for one chain: ``admit`` counts a connection in or
    refuses it (and counts the refusal), ``release`` counts an admitted one out."""

    __slots__ = ("active", "config", "stats")

    def __init__(self, config: ConnectionLimit, stats: ConnectionLimitStats) -> None:
        self.config = config
        self.stats = stats
        self.active = 0

    def admit(self) -> bool:
        if self.active >= self.config.max_connections:
            self.stats.limited_connections += 1
            return False
        self.active += 1
        self.stats.active_connections += 1
        return True

    def release(self) -> None:
        self.active -= 1
        self.stats.active_connections -= 1
