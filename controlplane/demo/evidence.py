"""What the demo's report judges: pure verdicts over what the demo measured.

Owns ``Inbound``, one version's way in at one moment (its sidecar's inbound listener, as the
admin ``/stats?format=flat`` counts it, and the caller identities its application saw), and the checks
built on it: the inbound TLS is post-quantum only, and every request a version answered came
through its sidecar's mutual-TLS listener from the caller (the listener has one filter chain,
with a ``DownstreamTlsContext``: a request it counts came over TLS; the app's
``x-forwarded-client-cert`` names the caller's verified SPIFFE ID). Also ``matches`` (the counts
fit a split) and ``all_acked`` (``meshctl -o json proxies``).

Must not depend on: asyncio, sockets, subprocesses (the demo measures, this module judges).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.demo.apps import Seen, Tally

PQ_GROUP = "X25519MLKEM768"


@dataclass(frozen=True, slots=True)
class Inbound:
    """One version's way in, counted since its sidecar and app started (or between two moments)."""

    handshakes: Mapping[str, int]  # negotiated TLS group -> handshakes on the inbound listener
    refused: int  # TLS connections the inbound listener refused
    requests: int  # HTTP requests through the inbound listener
    app_requests: int  # requests the application received
    vouched: int  # of those, the ones whose x-forwarded-client-cert named the caller

    @classmethod
    def measure(cls, stats: Mapping[str, Any], seen: Seen, caller: str) -> Inbound:
        """From the sidecar's admin ``/stats?format=flat`` (JSON) and what its app saw, now."""
        return cls(
            handshakes=dict(stats.get("listener.inbound.ssl_handshakes_by_group", {})),
            refused=int(stats.get("listener.inbound.ssl_connection_error", 0)),
            requests=int(stats.get("http.inbound.downstream_rq_total", 0)),
            app_requests=seen.requests,
            vouched=seen.callers[caller],
        )

    def since(self, earlier: Inbound) -> Inbound:
        """What happened between ``earlier`` and this moment (counters only grow)."""
        groups = {g: n - earlier.handshakes.get(g, 0) for g, n in self.handshakes.items()}
        return Inbound(
            handshakes={g: n for g, n in groups.items() if n},
            refused=self.refused - earlier.refused,
            requests=self.requests - earlier.requests,
            app_requests=self.app_requests - earlier.app_requests,
            vouched=self.vouched - earlier.vouched,
        )

    @property
    def pq_only(self) -> bool:
        """At least one handshake, every one of them on the post-quantum group, none refused."""
        return set(self.handshakes) == {PQ_GROUP} and self.refused == 0

    def all_vouched(self, answered: int) -> bool:
        """The ``answered`` requests, no more and no fewer, came over the sidecar's mTLS from the caller."""
        return self.requests == self.app_requests == self.vouched == answered


def matches(tally: Tally, split: dict[str, int]) -> bool:
    """Each version's count within four standard deviations of its share (a binomial draw per request)."""
    n, total = tally.total - tally.failed, sum(split.values())
    for version in {*split, *tally.versions}:
        p = split.get(version, 0) / total
        if abs(tally.versions[version] - n * p) > 4 * math.sqrt(n * p * (1 - p)):
            return False
    return n > 0


def all_acked(proxies_json: str, groups: set[str]) -> bool:
    """Every sidecar group has a proxy connected, none NACKing, each type's last version ACKed."""
    try:
        proxies = json.loads(proxies_json)["proxies"]
    except (ValueError, KeyError):
        return False
    acked = all(
        not p["nacking"] and all(r["version_acked"] == r["version_sent"] for r in p["resources"])
        for p in proxies
    )
    return acked and groups <= {p["group"] for p in proxies}
