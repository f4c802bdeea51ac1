"""The headers the HCM composes for one request, whatever its codec, sans-I/O.

Owns what the upstream request says (the route's request mutations, the target rewrite,
x-forwarded-for/-proto, x-request-id) and what the response says (the route's response
mutations, then the HTTP filters' response hooks, ``hcm/filters.py``), for upstream responses
and local replies alike. Each function reads one ``Exchange``'s routing (plan, decision,
weighted cluster). Must not import asyncio, sockets or either codec package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshproxy.hcm.filters import run_encode, run_response
from meshproxy.router.action import rewrite_target
from meshproxy.router.headers import apply_mutations

if TYPE_CHECKING:
    from meshproxy.hcm.exchange import Exchange
    from meshproxy.hcm.filters import BodyEncoder
    from meshproxy.hcm.reply import LocalReply


def upstream_request(
    x: Exchange,
    authority: bytes,
    url: bytes,
    headers: list[tuple[bytes, bytes]],
    xff: bytes | None,
    xfp: bytes | None,
    peer_ip: bytes,
    request_id: bytes | None,
) -> tuple[bytes, bytes, bytes, bytes, bytes | None]:
    """Applies the route's request mutations to ``headers`` and returns (authority, target,
    x-forwarded-for, x-forwarded-proto, x-request-id or None)."""
    ctx = x.ctx
    plan = x.plan
    decision = x.decision
    assert plan is not None and decision is not None
    weighted = x.weighted
    levels = plan.request_levels if weighted is None else decision.request_mutations_for(weighted)
    if levels:
        apply_mutations(headers, *levels)
    target = rewrite_target(decision.route, url) if plan.rewrites else url  # type: ignore[arg-type]  # routed
    # x-forwarded-for always gains the peer (Envoy's skip_xff_append: false); with
    # use_remote_address this hop is the edge and states the scheme itself.
    xff = xff + b", " + peer_ip if xff else peer_ip
    xfp = ctx.scheme if ctx.config.use_remote_address or xfp is None else xfp
    if request_id is None and ctx.config.generate_request_id:
        request_id = ctx.request_ids.next()
    if ctx.tracer is not None and x.span is None:
        x.span = ctx.tracer.begin(headers)
    return plan.host or authority, target, xff, xfp, request_id


def edits_response(x: Exchange) -> tuple[Any, ...] | None:
    """What ``edit_response`` would apply to a routed request's response: the route's response
    mutation levels (maybe empty), or None when there is nothing to do (no mutation, no
    response hook): callers then leave the headers unparsed."""
    weighted, plan, decision = x.weighted, x.plan, x.decision
    assert plan is not None and decision is not None  # only called once routed
    levels = plan.response_levels if weighted is None else decision.response_mutations_for(weighted)
    if levels:
        return levels
    chain = x.ctx.filters
    if chain is None:
        return None
    # Encode hooks act only on requests whose hooks left state (rule 4b of hcm/filters.py).
    return levels if chain.response or (chain.encode and x.filter_state is not None) else None


def edit_response(
    x: Exchange, status: int, headers: list[tuple[bytes, bytes]], levels: tuple[Any, ...], body: bool
) -> BodyEncoder | None:
    """An upstream response's headers: the route's mutations, then the filters' response
    hooks (in reverse order: Envoy's encoder order); with a ``body`` to come, the filters'
    encode hooks, and the body encoder one of them returned."""
    if levels:
        apply_mutations(headers, *levels)
    chain = x.ctx.filters
    if chain is None:
        return None
    run_response(chain, x, status, headers)
    return run_encode(chain, x, status, headers) if body and chain.encode else None


def reply_headers(x: Exchange, reply: LocalReply) -> list[tuple[bytes, bytes]] | None:
    """The extra headers of a local reply; once a route was chosen, with its response
    mutations (Envoy's router finalizes the response headers of its local replies too), then
    the filters' response hooks."""
    extra = list(reply.extra) if reply.extra else None
    decision = x.decision
    if decision is not None:
        levels = decision.response_mutations_for(x.weighted)
        if levels:
            extra = extra or []
            apply_mutations(extra, *levels)
    chain = x.ctx.filters
    if chain is not None and chain.response:
        extra = extra or []
        run_response(chain, x, reply.status, extra)
    return extra
