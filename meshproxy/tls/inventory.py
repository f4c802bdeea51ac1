"""The crypto inventory: what each peer identity's TLS connections negotiated, both directions.

Owns ``CryptoInventory``: per peer SPIFFE ID (the URI SAN of the certificate the peer showed),
the connections counted by (direction, group, signature algorithm, TLS version), when the peer
was first and last seen, and its classical fallbacks (a handshake whose group has no ML-KEM:
``policy.PQ_GROUPS``), how many and when the last was. ``inbound`` is a handshake a listener
accepted, ``outbound`` one a cluster made. A peer without a SPIFFE ID is not kept (the
handshake counters of the listener and cluster still count it).

Bounded: at most ``limit`` peers, least recently seen evicted first (``evicted`` counts them),
and each peer's combinations are few by construction (the groups, sigalgs and versions offered).
Recorded once per handshake (``record``, with the wall-clock ``now`` of the caller), never per
request; read by the admin's ``/crypto_inventory`` and by ``InventoryCollector`` as the
Prometheus family ``meshproxy_peer_tls_connections_total{peer,group,sigalg,version}``.
Must not import asyncio, sockets or pyOpenSSL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from meshproxy.tls.policy import PQ_GROUPS

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily

    from meshproxy.tls.engine import Negotiated

Direction = Literal["inbound", "outbound"]
DEFAULT_LIMIT = 1024  # peers kept; a mesh's identities, not its connections


class PeerRecord:
    __slots__ = ("classical", "connections", "first_seen", "last_classical", "last_seen")

    def __init__(self, now: float) -> None:
        self.first_seen = now
        self.last_seen = now
        self.connections: dict[tuple[str, str, str, str], int] = {}  # (direction, group, sigalg, version)
        self.classical = 0
        self.last_classical = 0.0


class CryptoInventory:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.peers: OrderedDict[str, PeerRecord] = OrderedDict()  # least recently seen first
        self.evicted = 0
        self.version = 0  # counts recorded handshakes: a reporter sends only what changed

    def record(self, negotiated: Negotiated, direction: Direction, now: float) -> None:
        """One completed handshake; ``now``: wall-clock seconds."""
        peer = next((u for u in negotiated.peer_uris if u.startswith("spiffe://")), None)
        if peer is None:
            return
        self.version += 1
        entry = self.peers.get(peer)
        if entry is None:
            if len(self.peers) >= self.limit:
                self.peers.popitem(last=False)
                self.evicted += 1
            entry = self.peers[peer] = PeerRecord(now)
        else:
            self.peers.move_to_end(peer)
            entry.last_seen = now
        # A resumed handshake shows no signature: counted under "resumed".
        key = (direction, negotiated.group, negotiated.peer_signature or "resumed", negotiated.version)
        entry.connections[key] = entry.connections.get(key, 0) + 1
        if negotiated.group not in PQ_GROUPS:
            entry.classical += 1
            entry.last_classical = now

    def as_json(self) -> dict[str, Any]:
        """``GET /crypto_inventory``: each peer, most recently seen first."""
        peers = []
        for identity, entry in reversed(self.peers.items()):
            keys = entry.connections.keys()
            connections = [
                {
                    "direction": d,
                    "group": g,
                    "sigalg": s,
                    "version": v,
                    "count": n,
                    "post_quantum": g in PQ_GROUPS,
                }
                for (d, g, s, v), n in sorted(entry.connections.items())
            ]
            peers.append(
                {
                    "peer": identity,
                    "first_seen": _iso(entry.first_seen),
                    "last_seen": _iso(entry.last_seen),
                    "groups": sorted({k[1] for k in keys}),
                    "signature_algorithms": sorted({k[2] for k in keys}),
                    "tls_versions": sorted({k[3] for k in keys}),
                    "classical_fallbacks": entry.classical,
                    "last_classical_fallback": _iso(entry.last_classical) if entry.classical else None,
                    "connections": connections,
                }
            )
        return {"limit": self.limit, "evicted": self.evicted, "peers": peers}


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"


# The series, once: (family name, labels, help); the collector and docs/stats.md read it.
SERIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "connections": (
        "meshproxy_peer_tls_connections",
        ("peer", "group", "sigalg", "version"),
        "TLS connections with a peer identity, by negotiated group, signature algorithm and version.",
    ),
    "fallbacks": (
        "meshproxy_peer_tls_classical_fallbacks",
        ("peer",),
        "TLS connections with a peer identity that negotiated a classical (non-ML-KEM) group.",
    ),
    "evicted": (
        "meshproxy_peer_tls_inventory_evicted",
        (),
        "Peers dropped from the crypto inventory, least recently seen first, past its limit.",
    ),
}


def doc_rows() -> Iterator[tuple[str, str, tuple[str, ...], str]]:
    """(exported name, type, labels, help) per family, for docs/stats.md (``meshproxy.stats``)."""
    for name, labels, text in SERIES.values():
        yield name + "_total", "counter", labels, text


class InventoryCollector:
    """The inventory as Prometheus series (bounded with it): connections per peer and
    combination (summed over directions), classical fallbacks per peer, and the evictions."""

    def __init__(self, inventory: CryptoInventory) -> None:
        self.inventory = inventory

    def collect(self) -> Iterator[CounterMetricFamily]:
        from prometheus_client.core import CounterMetricFamily  # admin/prometheus.py

        inventory = self.inventory
        connections, fallbacks, evicted = (
            CounterMetricFamily(name, text, labels=labels) for name, labels, text in SERIES.values()
        )
        for identity, entry in list(inventory.peers.items()):
            summed: dict[tuple[str, str, str], int] = {}
            for (_, group, sigalg, version), n in entry.connections.items():
                summed[(group, sigalg, version)] = summed.get((group, sigalg, version), 0) + n
            for (group, sigalg, version), n in summed.items():
                connections.add_metric([identity, group, sigalg, version], n)
            fallbacks.add_metric([identity], entry.classical)
        evicted.add_metric([], inventory.evicted)
        yield connections
        yield fallbacks
        yield evicted
