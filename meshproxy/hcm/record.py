"""The JSON access-log record of one HTTP exchange, for either codec.

Owns the mapping from a finished request to the fields operators expect (Envoy's default
format, as JSON); runs only when an access log is configured. Must not import a codec.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from meshproxy.addresses import address_of, host_port

if TYPE_CHECKING:
    from meshproxy.hcm.exchange import Exchange, RequestView
    from meshproxy.tls.engine import Negotiated


def access_record(
    x: Exchange, stream: RequestView, protocol: str, peer: Any, elapsed_ms: float
) -> dict[str, Any]:
    """``peer``: the downstream connection (its ``peer_label`` and ``tls``)."""
    route = x.decision.route if x.decision is not None else None
    started = x.wall_start or time.time()
    tls = peer.tls
    record = {
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))
        + f".{int((started % 1) * 1000):03d}Z",
        "method": stream.method.decode("latin-1"),
        "path": stream.url.decode("latin-1"),
        "protocol": protocol,
        "authority": (stream.authority or b"").decode("latin-1"),
        "response_code": stream.status,
        "response_flags": stream.flags,
        "bytes_received": stream.rx_bytes,
        "bytes_sent": stream.tx_bytes,
        "duration_ms": round(elapsed_ms, 3),
        "upstream_host": x.host.label if x.host is not None else None,
        "upstream_cluster": x.cluster.config.name if x.cluster is not None else None,
        "request_id": stream.request_id.decode("latin-1") if stream.request_id else None,
        "downstream_remote_address": peer.peer_label,
        "downstream_local_address": _local_label(peer),
        "user_agent": next((v.decode("latin-1") for n, v in stream.headers if n == b"user-agent"), None),
        "route_name": route.name if route is not None and route.name else None,
    }
    if tls is not None:
        record.update(tls_fields(tls))
    return record


def _local_label(peer: Any) -> str:
    """%DOWNSTREAM_LOCAL_ADDRESS%: the original destination when the listener restored it."""
    local = peer.original_dst or address_of(peer.transport.get_extra_info("sockname"))
    return host_port(*local) if local[0] else ""


def tls_fields(tls: Negotiated) -> dict[str, Any]:
    """The evidence of one TLS connection, as the access log and the admin show it."""
    return {
        "tls_version": tls.version,
        "tls_group": tls.group,
        "tls_cipher": tls.cipher,
        "tls_peer_signature": tls.peer_signature or None,
        "tls_resumed": tls.resumed,
        "peer_identity": next((u for u in tls.peer_uris if u.startswith("spiffe://")), None),
    }
