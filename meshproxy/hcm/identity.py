"""Who is on each side of a connection, as the HCM states it: XFCC and our own SPIFFE ID.

Owns ``downstream_peer`` (a downstream connection's address, TLS evidence and Envoy's
SANITIZE_SET ``x-forwarded-client-cert`` for a verified client, computed once per connection,
for either codec) and ``local_identity`` (the SPIFFE ID of our SVID, XFCC's ``By=``). Must not
import a codec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshproxy.addresses import address_of, host_port
from meshproxy.identity.spiffe import SpiffeId, leaf_spiffe_id
from meshproxy.identity.xfcc import format_element

if TYPE_CHECKING:
    from meshproxy.hcm.context import HttpContext
    from meshproxy.tls.engine import Negotiated


def downstream_peer(ctx: HttpContext, transport: Any) -> tuple[bytes, str, Negotiated | None, bytes | None]:
    """(peer address, "address:port", the TLS evidence, the XFCC element) of a connection."""
    host, port = address_of(transport.get_extra_info("peername"))
    ip, label = (host.encode(), host_port(host, port)) if host else (b"", "")
    tls: Negotiated | None = transport.get_extra_info("tls")
    if tls is None or not tls.peer_chain:
        return ip, label, tls, None
    peer_id = next((u for u in tls.peer_uris if u.startswith("spiffe://")), None)
    xfcc = format_element(
        ctx.local_identity,
        tls.peer_leaf_der(),
        SpiffeId.parse(peer_id) if peer_id else None,
    ).encode()
    return ip, label, tls, xfcc


def local_identity(chain_pem: bytes) -> SpiffeId | None:
    """The SPIFFE ID of the first certificate in ``chain_pem`` (our SVID), if it has one."""
    return leaf_spiffe_id(chain_pem)
