"""Who is on each side of a connection, as the HCM states it: XFCC and our own SPIFFE ID.

Owns ``client_xfcc`` (Envoy's SANITIZE_SET ``x-forwarded-client-cert`` for a verified client,
computed once per connection, for either codec) and ``local_identity`` (the SPIFFE ID of our
SVID, XFCC's ``By=``). Must not import asyncio or a codec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from meshproxy.errors import MeshproxyError
from meshproxy.identity.spiffe import SpiffeId
from meshproxy.identity.xfcc import format_element

if TYPE_CHECKING:
    from meshproxy.hcm.context import HttpContext
    from meshproxy.tls.engine import Negotiated


def client_xfcc(ctx: HttpContext, tls: Negotiated | None) -> bytes | None:
    """The XFCC element for the verified client of a connection; None without one."""
    if tls is None or not tls.peer_chain:
        return None
    peer_id = next((u for u in tls.peer_uris if u.startswith("spiffe://")), None)
    return format_element(
        ctx.local_identity,
        tls.peer_chain[0].public_bytes(Encoding.DER),
        SpiffeId.parse(peer_id) if peer_id else None,
    ).encode()


def local_identity(chain_pem: bytes) -> SpiffeId | None:
    """The SPIFFE ID of the first certificate in ``chain_pem`` (our SVID), if it has one."""
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        return SpiffeId.from_certificate(leaf)
    except (ValueError, IndexError, MeshproxyError):
        return None
