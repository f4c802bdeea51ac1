"""The overload state the data plane reads: one immutable object, swapped whole.

Owns what each overload action means at a connection or request: whether listeners accept,
the fraction of new connections rejected, of HTTP/1 keep-alive decisions turned into a close,
of new requests shed with 503, and how far timers shrink. ``NORMAL`` is the state without
overload (and without an ``overload_manager``), so the data plane never tests for None.
Must not import asyncio, sockets or generated protobuf code.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from meshproxy.overload.config import TimerMinimum, TimerType


@dataclass(frozen=True, slots=True)
class OverloadState:
    """Each fraction is the value (0..1) of its Envoy action; a fraction is applied as a
    Bernoulli draw per decision, as Envoy does, so a threshold trigger (0 or 1) is
    deterministic and a scaled trigger sheds proportionally.

    The fields are read on the hot path; the methods are for the decision once a field is
    non-zero: ``if state.shed_fraction and state.shed_request(rng): ...``.
    """

    # envoy.overload_actions.stop_accepting_connections: saturated -> False.
    accepting: bool = True
    # envoy.overload_actions.reject_incoming_connections
    reject_fraction: float = 0.0
    # envoy.overload_actions.disable_http_keepalive
    keepalive_close_fraction: float = 0.0
    # envoy.overload_actions.stop_accepting_requests
    shed_fraction: float = 0.0
    # envoy.overload_actions.reduce_timeouts, and its configured minimums by timer.
    timer_scale: float = 0.0
    timer_minimums: Mapping[TimerType, TimerMinimum] = field(
        default_factory=lambda: MappingProxyType({}), compare=False
    )

    def reject_connection(self, rng: random.Random) -> bool:
        """Whether to close a just-accepted connection (Envoy: downstream_cx_overload_reject)."""
        return _draw(self.reject_fraction, rng)

    def close_keepalive(self, rng: random.Random) -> bool:
        """Whether this response closes its connection (``connection: close`` on HTTP/1.1,
        GOAWAY on HTTP/2; Envoy: downstream_cx_overload_disable_keepalive)."""
        return _draw(self.keepalive_close_fraction, rng)

    def shed_request(self, rng: random.Random) -> bool:
        """Whether a new request gets 503 with ``x-envoy-overloaded: true`` and response flag
        ``OL`` before routing (Envoy: downstream_rq_overload_close)."""
        return _draw(self.shed_fraction, rng)

    def scale_timeout(self, timer: TimerType, maximum: float) -> float:
        """A configured timeout as reduce_timeouts shortens it: Envoy's scaled range timer,
        minimum + (maximum - minimum) * (1 - action value). Timers without a configured
        minimum, and a maximum of 0 (disabled), are returned unchanged."""
        minimum = self.timer_minimums.get(timer)
        if minimum is None or not self.timer_scale or maximum <= 0:
            return maximum
        if minimum.min_timeout is not None:
            low = min(minimum.min_timeout, maximum)
        else:
            low = maximum * (minimum.min_scale or 0.0)
        return low + (maximum - low) * (1.0 - self.timer_scale)


def _draw(fraction: float, rng: random.Random) -> bool:
    return fraction >= 1.0 or (fraction > 0.0 and rng.random() < fraction)


NORMAL = OverloadState()
