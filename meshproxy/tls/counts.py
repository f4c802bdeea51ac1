"""Counting one completed handshake's evidence: the handshake, its group, its signature algorithm.

Owns the one rule both ends use (a listener for its downstream handshakes, a cluster for its
upstream ones; Envoy's ``ssl.handshake``, ``ssl.curves.<group>`` and ``ssl.sigalgs.<alg>``):
the stat objects are the owners', declared in ``meshproxy/stats.py``. Must not depend on
asyncio or sockets. Cost: three dict/slot updates per handshake, none per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from meshproxy.tls.engine import Negotiated  # (pyOpenSSL loads with the first TLS context)


class HandshakeStats(Protocol):
    ssl_handshake: int
    ssl_handshakes_by_group: dict[str, int]
    ssl_handshakes_by_sigalg: dict[str, int]


def count_handshake(stats: HandshakeStats, negotiated: Negotiated) -> None:
    """A completed handshake; a resumed one (no signature) is counted without a sigalg."""
    stats.ssl_handshake += 1
    groups = stats.ssl_handshakes_by_group
    groups[negotiated.group] = groups.get(negotiated.group, 0) + 1
    if negotiated.peer_signature:
        sigalgs = stats.ssl_handshakes_by_sigalg
        sigalgs[negotiated.peer_signature] = sigalgs.get(negotiated.peer_signature, 0) + 1
