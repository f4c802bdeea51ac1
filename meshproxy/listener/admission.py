"""Admission of accepted downstream connections: the limits checked before any work is done.

Owns the decision, made once per accepted socket and before a byte is read, whether the
connection may go on (finding 6, descriptor exhaustion; finding 9, handshake floods), as rules:

1. The global downstream connection limit (Envoy's ``global_downstream_max_connections``
   monitor; the overload runtime's ``connections``): over it, ``GLOBAL_LIMIT``.
2. The descriptor reserve: when fewer than ``reserve`` descriptors (a tenth of the soft
   RLIMIT_NOFILE, at least ``MIN_RESERVE``) would stay free, ``FD_RESERVE``. The reserve is
   what upstream connects, the admin port and health checks live on while downstream peers
   hold everything else, so the proxy can still say "overloaded"; and ``accept`` itself never
   meets EMFILE (on which asyncio logs and retries after a second, and libuv silently accepts
   and closes).
3. Handshakes in progress per listener: a listener holding ``max_pending`` connections that
   have not reached a codec yet (listener filters waiting, TLS handshake, codec choice) refuses
   with ``PENDING``; each such connection holds an OpenSSL state and buffers.
4. The overload manager's ``reject_incoming_connections`` (a Bernoulli draw at its value):
   ``OVERLOAD``.

A refused connection is closed at once (accept-and-close), counted by reason by the listener.

Cost: rules 1, 3 and 4 are a few attribute loads. Rule 2 keeps an estimate of open descriptors
(the last count of /proc/self/fd plus two per connection admitted since: its own and an
upstream one it may open; closes are not subtracted, so the estimate only errs high) and
recounts (one directory listing, linear in open descriptors) only when the estimate reaches
the line, at most once per ``recount_interval``; between recounts near the line it refuses.
Time is ``now`` and randomness ``rng``; must not import asyncio or sockets.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from enum import StrEnum

from meshproxy.overload.runtime import OverloadRuntime

MIN_RESERVE = 16
# Connections per listener that may be between accept and a codec at once (rule 3).
MAX_PENDING = 1024


class Refusal(StrEnum):
    GLOBAL_LIMIT = "global_limit"
    FD_RESERVE = "fd_reserve"
    PENDING = "pending_handshakes"
    OVERLOAD = "overload"


class FdReserve:
    """Rule 2 for the whole process (every listener shares one)."""

    __slots__ = ("_admitted", "_count", "_counted", "_counted_at", "_interval", "line", "reserve")

    def __init__(
        self, limit: int | None, count_open: Callable[[], int], recount_interval: float = 0.1
    ) -> None:
        """``limit``: the soft RLIMIT_NOFILE (None: unlimited, no reserve); ``count_open``: the
        process's open descriptors now."""
        self.reserve = 0 if limit is None else max(MIN_RESERVE, limit // 10)
        # Admitted while the estimate of open descriptors stays below this line.
        self.line = None if limit is None else limit - self.reserve
        self._count = count_open
        self._interval = recount_interval
        self._counted = 0 if limit is None else count_open()
        self._counted_at = float("-inf")
        self._admitted = 0

    def admit(self, now: float) -> bool:
        line = self.line
        if line is None:
            return True
        if self._counted + 2 * (self._admitted + 1) > line:
            if now - self._counted_at < self._interval:
                return False
            self._counted = self._count()
            self._counted_at = now
            self._admitted = 0
            if self._counted + 2 > line:
                return False
        self._admitted += 1
        return True


class Admission:
    """Rules 1, 2 and 4, shared by every listener of the process; the listener adds rule 3."""

    __slots__ = ("fds", "max_pending", "overload", "rng")

    def __init__(
        self, overload: OverloadRuntime, fds: FdReserve, rng: random.Random, max_pending: int = MAX_PENDING
    ) -> None:
        self.overload = overload
        self.fds = fds
        self.rng = rng
        self.max_pending = max_pending

    def admit(self, pending: int, now: float) -> Refusal | None:
        """Whether a connection just accepted by a listener with ``pending`` connections short
        of a codec may go on; when it may (None), it holds a global slot: the caller gives it
        back with ``release`` when the connection ends."""
        if pending >= self.max_pending:
            return Refusal.PENDING
        state = self.overload.state
        if state.reject_fraction and state.reject_connection(self.rng):
            return Refusal.OVERLOAD
        if not self.fds.admit(now):
            return Refusal.FD_RESERVE
        if not self.overload.connections.try_open():
            return Refusal.GLOBAL_LIMIT
        return None

    def release(self) -> None:
        self.overload.connections.close()
