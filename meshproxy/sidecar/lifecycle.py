"""The shutdown order of a sidecar: how long outbound listeners keep serving after SIGTERM.

At SIGTERM the pod's application and its sidecar are told to stop together. The application
may still be finishing requests that call other services through the sidecar's outbound
listeners, so those keep accepting and serving while the inbound listeners drain (the order
Kubernetes' native sidecars give). The sidecar cannot see the application exit; it infers it
from the outbound traffic, as Istio's ``EXIT_ON_ZERO_ACTIVE_CONNECTIONS`` does, bounded by a
fixed duration, as Istio's ``terminationDrainDuration`` is.

``OutboundHold`` is the policy, sans-I/O (``now`` passed in, the next deadline returned):

Rule 1. The hold begins at the first SIGTERM.
Rule 2. The outbound listeners are *active* at an observation when an outbound connection is
        open (accepted, whether or not a codec has it yet) or one was accepted since the
        previous observation (a short connection that came and went between two looks).
Rule 3. The hold ends when no observation has found them active for ``outbound_quiet``
        seconds (the application has exited: its pooled connections closed with it) ...
Rule 4. ... or ``drain_duration`` seconds after it began, whichever comes first ...
Rule 5. ... or at once when a second SIGTERM/SIGINT arrives (``hurry``).
Then the outbound listeners drain as the inbound ones did (stop accepting, finish in-flight,
``connection: close`` / GOAWAY). Observations are ``POLL`` seconds apart at most, so a quiet
spell is measured from the first look that found nothing, never longer than it was.

Must not depend on the proxy's runtime: the server feeds it counts and carries out its answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Seconds between two observations of the outbound listeners while the hold lasts.
POLL = 0.05


@dataclass(frozen=True, slots=True)
class Termination:
    """``meshproxy run --outbound-quiet`` and ``--termination-drain-duration``."""

    outbound_quiet: float = 1.0
    drain_duration: float = 5.0


class HoldEnd(enum.Enum):
    QUIET = "no outbound connection for the quiet period"
    DURATION = "the termination drain duration ended"
    SIGNAL = "a second signal"


class OutboundHold:
    def __init__(self, policy: Termination, now: float, accepted: int) -> None:
        self.policy = policy
        self.deadline = now + policy.drain_duration  # rule 4
        self.quiet_since: float | None = None
        self.accepted = accepted  # connections accepted so far (rule 2's "since")
        self.hurried = False
        self.ended: HoldEnd | None = None

    def hurry(self) -> None:
        """A second signal (rule 5): the next observation ends the hold."""
        self.hurried = True

    def observe(self, now: float, open_connections: int, accepted: int) -> float | None:
        """Observe the outbound listeners: ``open_connections`` open now, ``accepted`` in all so
        far. Returns when to observe next, or None once the hold has ended (``ended`` says why)."""
        if self.ended is not None:
            return None
        active = open_connections > 0 or accepted != self.accepted
        self.accepted = accepted
        if active:
            self.quiet_since = None
        elif self.quiet_since is None:
            self.quiet_since = now
        if self.hurried:
            self.ended = HoldEnd.SIGNAL
        elif self.quiet_since is not None and now - self.quiet_since >= self.policy.outbound_quiet:
            self.ended = HoldEnd.QUIET
        elif now >= self.deadline:
            self.ended = HoldEnd.DURATION
        if self.ended is not None:
            return None
        return min(now + POLL, self.deadline)
