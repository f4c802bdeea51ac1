"""What a matched route does to a request: the cluster pick, the path rewrite, the redirect.

Owns Envoy's RouteAction / RedirectAction request-side semantics as pure functions over the
frozen model and request bytes. Randomness arrives as ``rng_value``; nothing here keeps
state. Must not import asyncio, sockets or protobuf, and must not compile a regex (patterns
arrive compiled in the model).

Model strings are encoded (UTF-8) per call here rather than precompiled: only routes that
rewrite or redirect pay it, and the functions keep the model objects the data plane already
holds as their inputs. Envoy treats an empty ``prefix_rewrite`` / ``path_redirect`` /
``host_redirect`` / ``scheme_redirect`` and a zero ``port_redirect`` as unset; so do we.
"""

from __future__ import annotations

from meshproxy.config.model import Redirect, RegexRewrite, Route, RouteAction, RouteMatch, WeightedCluster
from meshproxy.router.match import split_target


def pick_cluster(action: RouteAction, rng_value: int) -> tuple[str, WeightedCluster | None]:
    """The upstream cluster for one request, and the weighted entry it came from (or None).

    Envoy's weighted pick (``RouteEntryImplBase::pickWeightedCluster``): ``rng_value %
    total_weight`` is walked over the cumulative weights; the entry whose half-open range
    ``[begin, begin + weight)`` holds it wins, so a zero-weight entry is never picked and
    each entry wins for exactly ``weight`` of every ``total_weight`` consecutive values.
    Requires, as the compiler guarantees, a cluster name or weighted entries whose weights sum
    to ``total_weight > 0``.
    """
    if action.cluster is not None:
        return action.cluster, None
    value = rng_value % action.total_weight
    for entry in action.weighted_clusters:
        value -= entry.weight
        if value < 0:
            return entry.name, entry
    # Unreachable while total_weight is the sum of the weights (a model invariant); Envoy
    # reports a bug here. Keep the request going on the last entry rather than failing it.
    last = action.weighted_clusters[-1]
    return last.name, last


def rewrite_target(route: Route, target: bytes) -> bytes:
    """``target`` as forwarded upstream after the route's ``prefix_rewrite`` / ``regex_rewrite``.

    Returns ``target`` itself when the route rewrites nothing. ``route`` must be the route
    that matched ``target``. The query string (and any fragment) is kept.
    """
    action = route.action
    if not isinstance(action, RouteAction) or (not action.prefix_rewrite and action.regex_rewrite is None):
        return target
    return _rewrite_path(route.match, target, action.prefix_rewrite, action.regex_rewrite)


def redirect_location(
    redirect: Redirect, match: RouteMatch, scheme: bytes, authority: bytes, target: bytes
) -> bytes:
    """The absolute ``Location`` for a redirect route (Envoy's ``RouteEntryImplBase::newPath``).

    ``scheme`` is the request's scheme (``b"http"`` or ``b"https"``), ``authority`` its Host
    as received, ``target`` its request target; ``match`` is the route's match (a
    ``prefix_rewrite`` replaces what it matched).

    - scheme: ``redirect.scheme`` if set (``https_redirect`` arrives as ``"https"``), else the
      request's.
    - host: ``redirect.host`` if set (the request's port is then dropped too); else the
      request's authority, without its port when ``port_redirect`` is set, or when the scheme
      changes and the port is the old scheme's default (``:80`` for http, ``:443`` for https).
    - port: ``:port_redirect`` if set.
    - path: ``path_redirect`` if set, keeping the request's query unless ``path_redirect``
      has its own; else the request path after ``prefix_rewrite`` / ``regex_rewrite``. A
      missing leading ``/`` is added. ``strip_query`` then drops the query, except one that
      ``path_redirect`` itself carries.
    """
    new_scheme = redirect.scheme.encode() if redirect.scheme else scheme
    port = b":" + str(redirect.port).encode() if redirect.port else b""
    host = redirect.host.encode() if redirect.host else _request_host(authority, scheme, new_scheme, port)
    path_has_query = False
    if redirect.path:
        path = redirect.path.encode()
        path_has_query = b"?" in path
        if not path_has_query:
            q = target.find(b"?")
            if q >= 0:
                path += target[q:]
    elif redirect.prefix_rewrite or redirect.regex_rewrite is not None:
        path = _rewrite_path(match, target, redirect.prefix_rewrite, redirect.regex_rewrite)
    else:
        path = target
    if not path.startswith(b"/"):
        path = b"/" + path
    if redirect.strip_query and not path_has_query:
        q = path.find(b"?")
        if q >= 0:
            path = path[:q]
    return b"".join((new_scheme, b"://", host, port, path))


def _request_host(authority: bytes, scheme: bytes, new_scheme: bytes, new_port: bytes) -> bytes:
    # Envoy's processRequestHost: where the port starts (after "]" for an IPv6 literal).
    if authority[:1] == b"[":
        end = authority.rfind(b"]:")
        if end >= 0:
            end += 1
    else:
        end = authority.rfind(b":")
    if end < 0:
        return authority
    remove = bool(new_port)
    if new_scheme != scheme:
        old_port = authority[end:]
        remove = remove or (scheme == b"https" and old_port == b":443")
        remove = remove or (scheme == b"http" and old_port == b":80")
    return authority[:end] if remove else authority


def _rewrite_path(match: RouteMatch, target: bytes, prefix: str | None, regex: RegexRewrite | None) -> bytes:
    # Envoy's currentUrlPathAfterRewriteWithMatchedPath: a prefix rewrite replaces the part
    # of the path the route matched (the whole path for "regex" routes); a regex rewrite
    # substitutes every match in the path; either way what follows the path is kept.
    path, _ = split_target(target)
    if prefix:
        matched = len(path) if match.path_kind == "regex" else len(match.path.encode())
        return prefix.encode() + target[matched:]
    assert regex is not None
    return regex.pattern.replace(regex.rewrite, path) + target[len(path) :]
