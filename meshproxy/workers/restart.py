"""When to restart a worker that ended unasked: exponential backoff, forgiven by a stable run.

Owns the delay rule, sans-I/O (``now`` is passed in): the first restart after a stable run
waits ``BASE`` seconds, each further one in a row doubles it up to ``CAP``; a worker that ran
``STABLE`` seconds before it ended starts the count again. A worker that cannot start at all
(a crash at import, a bind refused) is so retried forever, at most once per ``CAP``, while the
other workers serve. Must not depend on asyncio.
"""

from __future__ import annotations

BASE = 0.1
CAP = 10.0
STABLE = 30.0


class Backoff:
    def __init__(self, base: float = BASE, cap: float = CAP, stable: float = STABLE) -> None:
        self.base = base
        self.cap = cap
        self.stable = stable
        self.streak = 0  # restarts in a row without a stable run between them
        self._since: float | None = None

    def started(self, now: float) -> None:
        """The worker is serving (it reported started at ``now``)."""
        self._since = now

    def delay(self, now: float) -> float:
        """The worker ended at ``now``: seconds to wait before starting it again."""
        if self._since is not None and now - self._since >= self.stable:
            self.streak = 0
        self._since = None
        wait = min(self.cap, self.base * 2**self.streak)
        self.streak = min(self.streak + 1, 32)
        return wait
