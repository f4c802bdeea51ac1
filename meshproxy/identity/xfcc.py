"""Envoy's ``x-forwarded-client-cert`` (XFCC) header: one element per verified peer, and the policy.

Owns the header's format and Envoy's five ``forward_client_cert_details`` modes
(``HttpConnectionManager.ForwardClientCertDetails``), so the inbound HTTP path asks one function
what the header becomes.

Format (Envoy, "HTTP header manipulation", x-forwarded-client-cert): the value is a ``,``-separated
list of elements, one per proxy hop; an element is ``;``-separated ``Key=value`` pairs. A value
holding ``,`` ``;`` ``=`` or ``"`` is double-quoted, with ``"`` and ``\\`` escaped by a backslash.
meshproxy writes ``By=<our SPIFFE ID>;Hash=<sha256 hex of the peer leaf DER>;URI=<peer SPIFFE ID>``
in that order, as Envoy does with ``set_current_client_cert_details: {uri: true}``. SPIFFE IDs
never hold a character that needs quoting, so in practice nothing is quoted; the rule is kept
for whatever value a later detail (Subject, DNS) brings.

Modes (Envoy's semantics, all five, because the proto field carries all five):
- ``SANITIZE`` (Envoy's default): remove the header.
- ``FORWARD_ONLY``: forward it unchanged on mTLS, remove it otherwise.
- ``APPEND_FORWARD``: on mTLS append our element to what the peer sent.
- ``SANITIZE_SET``: on mTLS replace it with our element. **The inbound sidecar's default**: the
  app behind the peer proxy can write any XFCC it likes, and appending would pass that forgery
  on to our app next to the one element we actually verified.
- ``ALWAYS_FORWARD_ONLY``: forward it unchanged, even on plaintext.
On a connection without a verified client certificate every mode but ``ALWAYS_FORWARD_ONLY``
removes the header.

Must not depend on: asyncio, sockets, the TLS engine, protobuf (the config edge maps the enum).
"""

from __future__ import annotations

import enum
import hashlib

from meshproxy.identity.spiffe import SpiffeId

HEADER = "x-forwarded-client-cert"

_NEEDS_QUOTES = frozenset(',;="')


class ForwardClientCertDetails(enum.Enum):
    """Envoy's enum, same names and numbers."""

    SANITIZE = 0
    FORWARD_ONLY = 1
    APPEND_FORWARD = 2
    SANITIZE_SET = 3
    ALWAYS_FORWARD_ONLY = 4


def quote_value(value: str) -> str:
    """``value`` as Envoy writes it: bare if it has no ``,;="``, else double-quoted and escaped."""
    if not any(ch in _NEEDS_QUOTES for ch in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_element(local: SpiffeId | None, peer_cert_der: bytes, peer: SpiffeId | None) -> str:
    """Our element for one verified peer; compute it once per connection, not per request.

    ``local`` is our own SVID's ID (``By``, left out when we have none, as Envoy does); ``peer``
    is the verified peer's ID (``URI``, present but empty when the peer has none, as Envoy does).
    """
    pairs = []
    if local is not None:
        pairs.append("By=" + quote_value(str(local)))
    pairs.append("Hash=" + hashlib.sha256(peer_cert_der).hexdigest())
    pairs.append("URI=" + (quote_value(str(peer)) if peer is not None else ""))
    return ";".join(pairs)


def forward_client_cert(
    mode: ForwardClientCertDetails, existing: str | None, element: str | None
) -> str | None:
    """The header value to send upstream, or None to send none.

    ``existing`` is the request's XFCC value (several header lines already joined with ``,``);
    ``element`` is `format_element` for this connection, or None when the downstream connection
    has no verified client certificate.
    """
    if mode is ForwardClientCertDetails.ALWAYS_FORWARD_ONLY:
        return existing
    if mode is ForwardClientCertDetails.SANITIZE or element is None:
        return None
    if mode is ForwardClientCertDetails.FORWARD_ONLY:
        return existing
    if mode is ForwardClientCertDetails.APPEND_FORWARD and existing:
        return existing + "," + element
    return element
