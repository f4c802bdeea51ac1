"""The HTTP/1.1 request head a stream sends upstream, and the absolute-form request target.

Owns the bytes of the upstream request head: the rewritten target, ``host``, the request's
headers after the route's mutations, ``x-forwarded-for`` / ``-proto``, ``x-request-id`` and the
framing headers, built in one ``join``. Split from ``stream.py`` because it only reads the
stream's parsed request and never its lifecycle flags. Must not write to a connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshproxy.router.action import rewrite_target
from meshproxy.router.headers import apply_mutations

if TYPE_CHECKING:
    from meshproxy.http.plan import RoutePlan
    from meshproxy.http.stream import Stream
    from meshproxy.router.table import RouteDecision


def absolute_form(url: bytes) -> tuple[bytes, bytes] | None:
    """RFC 9112 §3.2.2: a proxy accepts ``http://host/path``; returns (its lower-cased
    authority, which replaces Host, and the origin-form target), or None when malformed."""
    scheme, sep, rest = url.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    cut = len(rest)
    for delim in (b"/", b"?"):
        i = rest.find(delim)
        if 0 <= i < cut:
            cut = i
    authority, tail = rest[:cut], rest[cut:]
    if not authority or b"@" in authority:
        return None
    return authority.lower(), tail if tail.startswith(b"/") else b"/" + tail


def request_head(stream: Stream, plan: RoutePlan, decision: RouteDecision, authority: bytes) -> bytes:
    """The upstream request head (ending in the blank line) for ``stream``'s request."""
    ctx = stream.ctx
    headers = stream.headers
    weighted = stream.weighted
    levels = plan.request_levels if weighted is None else decision.request_mutations_for(weighted)
    if levels:
        apply_mutations(headers, *levels)
    url = stream.url
    target = rewrite_target(decision.route, url) if plan.rewrites else url  # type: ignore[arg-type]
    parts = [stream.method, b" ", target, b" HTTP/1.1\r\nhost: ", plan.host or authority, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    # x-forwarded-for always gains the peer (Envoy's skip_xff_append: false); with
    # use_remote_address this hop is the edge and states the scheme itself.
    peer = stream.conn.peer_ip
    xff = stream.xff
    parts += (b"x-forwarded-for: ", xff + b", " + peer if xff else peer, b"\r\n")
    xfp = ctx.scheme if ctx.config.use_remote_address or stream.xfp is None else stream.xfp
    parts += (b"x-forwarded-proto: ", xfp, b"\r\n")
    rid = stream.request_id
    if rid is None and ctx.config.generate_request_id:
        rid = stream.request_id = ctx.request_ids.next()
    if rid is not None:
        parts += (b"x-request-id: ", rid, b"\r\n")
    if stream.upgrade is not None:
        parts += (b"connection: upgrade\r\nupgrade: ", stream.upgrade, b"\r\n")
    elif stream.chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
