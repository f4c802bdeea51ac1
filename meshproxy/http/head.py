"""The HTTP/1.1 request head a stream sends upstream, and the request target a client sent.

Owns the bytes of the upstream request head: the rewritten target, ``host``, the request's
headers after the route's mutations, ``x-forwarded-for`` / ``-proto``, ``x-request-id`` (their
values are the HCM's: ``hcm.headers.upstream_request``) and the framing headers, in one
``join``. Split from ``stream.py`` because it only reads the stream's parsed request and never
its lifecycle flags. Must not write to a connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy.hcm.headers import upstream_request
from meshproxy.hcm.reply import LocalReply
from meshproxy.http.codec import authority_ok

if TYPE_CHECKING:
    from meshproxy.http.stream import Stream

INVALID_TARGET = LocalReply(400, b"invalid request target", "DPE")
MISSING_HOST = LocalReply(400, b"missing host header", "DPE")


def absolute_form(url: bytes) -> tuple[bytes, bytes] | None:
    """RFC 9112 §3.2.2: a proxy accepts ``http://host/path``; returns (its lower-cased
    authority, which replaces Host, and the origin-form target), or None when malformed
    (RFC 3986 authority syntax; userinfo refused)."""
    scheme, sep, rest = url.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    cut = len(rest)
    for delim in (b"/", b"?"):
        i = rest.find(delim)
        if 0 <= i < cut:
            cut = i
    authority, tail = rest[:cut], rest[cut:]
    if not authority or not authority_ok(authority):
        return None
    return authority.lower(), tail if tail.startswith(b"/") else b"/" + tail


def target_refusal(stream: Stream) -> LocalReply | None:
    """RFC 9112 §3.2: an absolute-form target becomes the stream's authority and origin-form
    url; a malformed one, or no Host on HTTP/1.1, is the client's protocol error: the reply
    to send (counted; the connection will close)."""
    refused = None
    if stream.url[0] != 0x2F and stream.url != b"*":
        absolute = absolute_form(stream.url)
        if absolute is None:
            refused = INVALID_TARGET
        else:
            stream.authority, stream.url = absolute
    if refused is None and stream.authority is None and not stream.http10:
        refused = MISSING_HOST
    if refused is not None:
        stream.ctx.stats.downstream_cx_protocol_error += 1
        stream.keep_alive = False
    return refused


def request_head(stream: Stream, authority: bytes) -> bytes:
    """The upstream request head (ending in the blank line) for ``stream``'s request."""
    headers = stream.headers
    host, target, xff, xfp, rid = upstream_request(
        stream.x,
        authority,
        stream.url,
        headers,
        stream.xff,
        stream.xfp,
        stream.conn.peer_ip,
        stream.request_id,
    )
    stream.request_id = rid
    parts = [stream.method, b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"x-forwarded-for: ", xff, b"\r\nx-forwarded-proto: ", xfp, b"\r\n")
    if rid is not None:
        parts += (b"x-request-id: ", rid, b"\r\n")
    if stream.upgrade is not None:
        parts += (b"connection: upgrade\r\nupgrade: ", stream.upgrade, b"\r\n")
    elif stream.chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
