"""A log limiter: one line per reason per interval, and how many were suppressed meanwhile.

Owns the token buckets that keep an attack from turning into a log flood (finding 17: every
failed TLS handshake logged a WARNING, 9,293 lines in 5 s). Each reason (a fixed vocabulary:
TLS error codes, refusal reasons) has a bucket of one token refilled once per ``interval``;
a line without a token is counted, and the next line that gets through says "N more
suppressed". The counters (``stats.py``) count every event; the log only explains them.
Cost per call: one dict lookup and a comparison. Time is ``now``; must not import asyncio.
"""

from __future__ import annotations

import logging


class LogLimiter:
    __slots__ = ("_interval", "_log", "_next", "_suppressed")

    def __init__(self, log: logging.Logger, interval: float = 1.0) -> None:
        self._log = log
        self._interval = interval
        # reason -> when its next line may be written; reason -> lines dropped since the last.
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, reason: str, now: float, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at ``level`` unless ``reason`` already had its line this interval;
        returns whether the line was written."""
        if now < self._next.get(reason, now):
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return False
        self._next[reason] = now + self._interval
        dropped = self._suppressed.pop(reason, 0)
        if dropped:
            msg += " (%d more suppressed)"
            args = (*args, dropped)
        self._log.log(level, msg, *args)
        return True
