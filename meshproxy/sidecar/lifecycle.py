"""The shutdown order of a sidecar: how long its listeners keep accepting after SIGTERM.

At SIGTERM the pod's application and its sidecar are told to stop together. The application
may still be finishing requests that call other services through the sidecar's outbound
listeners, so those keep accepting and serving normally (the order Kubernetes' native sidecars
give); and callers keep being routed to the pod until their endpoint update lands, so in
sidecar mode the inbound listeners keep accepting too, in drain mode (every response closes its
connection, HTTP/2 gets GOAWAY after it), as Envoy's graceful drain does under Istio's agent
(``drain_listeners?inboundonly&graceful``). The sidecar cannot see the application exit nor the
callers leave; it infers both from the traffic, as Istio's ``EXIT_ON_ZERO_ACTIVE_CONNECTIONS``
does, bounded by a fixed duration, as Istio's ``terminationDrainDuration`` is.

``DrainHold`` is the policy for one direction, sans-I/O (``now`` passed in, the next deadline
returned); the server runs one for the outbound listeners and, in sidecar mode, one for the
inbound ones, and feeds each the counts of its direction:

Rule 1. The hold begins at the first SIGTERM.
Rule 2. The listeners are *active* at an observation when something is in progress (outbound:
        a connection is open, accepted or not yet handed to a codec; inbound: a request or a
        TCP relay is in progress) or the running total moved since the previous observation
        (outbound: connections accepted; inbound: requests started), so a short exchange that
        came and went between two looks counts.
Rule 3. The hold ends when no observation has found them active for ``quiet`` seconds (the
        application has exited: its pooled connections closed with it; the callers have
        moved to other endpoints) ...
Rule 4. ... or ``drain_duration`` seconds after it began, whichever comes first ...
Rule 5. ... or at once when a second SIGTERM/SIGINT arrives (``hurry``).
Then the listeners drain (stop accepting, finish in-flight, ``connection: close`` / GOAWAY).
Observations are ``POLL`` seconds apart at most, so a quiet spell is measured from the first
look that found nothing, never longer than it was.

Must not depend on the proxy's runtime: the server feeds it counts and carries out its answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Seconds between two observations of the outbound listeners while the hold lasts.
POLL = 0.05


@dataclass(frozen=True, slots=True)
class Termination:
    """``meshproxy run --drain-quiet``, ``--termination-drain-duration`` and whether inbound
    listeners hold too (``--sidecar`` or ``--graceful-inbound-drain``)."""

    quiet: float = 1.0
    drain_duration: float = 5.0
    graceful_inbound: bool = False


class HoldEnd(enum.Enum):
    QUIET = "no traffic for the quiet period"
    DURATION = "the termination drain duration ended"
    SIGNAL = "a second signal"


class DrainHold:
    def __init__(self, policy: Termination, now: float, accepted: int) -> None:
        self.policy = policy
        self.deadline = now + policy.drain_duration  # rule 4
        self.quiet_since: float | None = None
        self.accepted = accepted  # the running total of rule 2, at the last look
        self.hurried = False
        self.ended: HoldEnd | None = None

    def hurry(self) -> None:
        """A second signal (rule 5): the next observation ends the hold."""
        self.hurried = True

    def observe(self, now: float, in_progress: int, accepted: int) -> float | None:
        """Observe the listeners: ``in_progress`` exchanges now, ``accepted`` in all so far
        (rule 2). Returns when to observe next, or None once the hold has ended (``ended``)."""
        if self.ended is not None:
            return None
        active = in_progress > 0 or accepted != self.accepted
        self.accepted = accepted
        if active:
            self.quiet_since = None
        elif self.quiet_since is None:
            self.quiet_since = now
        if self.hurried:
            self.ended = HoldEnd.SIGNAL
        elif self.quiet_since is not None and now - self.quiet_since >= self.policy.quiet:
            self.ended = HoldEnd.QUIET
        elif now >= self.deadline:
            self.ended = HoldEnd.DURATION
        if self.ended is not None:
            return None
        return min(now + POLL, self.deadline)
