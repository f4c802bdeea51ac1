"""The HTTP filter chain's runtime contract (Envoy's http_filters between the codec and the router), sans-I/O.

Contract, for whoever adds a filter (``hcm/chain.py`` maps a compiled config to its factory):
1. A factory ``(config, name, ctx, now) -> Hooks | None`` runs once per filter chain and
   configuration snapshot (``HttpContext``); None leaves the filter out (nothing to do).
2. ``Hooks`` holds up to three callables; a filter fills only those it needs. A stateless filter
   gives plain functions (``functools.partial`` over its config); one with shared state (a token
   bucket) gives bound methods of one object per chain. Per-request state, when a filter needs
   it, lives in ``x.filter_state`` (a dict keyed by the filter's name, created by the filter).
3. ``request(stream, x, now)`` runs on the request headers, in the configured order, after the
   HCM's own steps (overload shed, path normalisation) and the route match (``x.decision``,
   so per-route config is readable: ``route_config(x, name)``), before the router's action.
   It may mutate ``stream.headers`` and returns None (go on), a ``LocalReply`` (answer now: the
   chain stops) or a ``Wait`` (hold the request for ``Wait.delay`` seconds, or with ``delay``
   None until the filter calls ``stream.resume()`` once its decision arrived, after checking
   ``stream.finished``). Then the same hook is called again: its per-request state tells it
   that it waited, and it answers as in the first call (Envoy's continueDecoding).
4. ``response(x, status, headers)`` may mutate the response headers; it runs in reverse order
   (Envoy's encoder order) on upstream responses and on every local reply, after the route's
   response header mutations.
4b. ``encode(x, status, headers)`` runs after the response hooks, on upstream responses that
   carry a body only (never on local replies, nor a HEAD's or 204/304's response); it may
   rewrite the headers (a compressor removes content-length) and return a ``BodyEncoder``: the
   codec then passes each body piece through ``data`` and writes ``end()``'s tail before the
   response ends (chunked on HTTP/1.1). The first filter, in encoder order, that returns one
   transforms the body; later encode hooks do not run. An encode hook acts only on a request
   whose request hook left state in ``x.filter_state``: without any, the response headers are
   not parsed for it.
5. ``end(stream, x, now)`` observes the finished request at access-record time (metrics, tracing).
6. The router is last and is not a filter here: it is the Exchange's routing and forwarding.
   With no filter configured ``ctx.filters`` is None: each hook site costs one falsy check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from meshproxy.hcm.exchange import Exchange, RequestView
    from meshproxy.hcm.reply import LocalReply


class Wait:
    """A request hook's answer: hold the request ``delay`` seconds (None: until resumed)."""

    __slots__ = ("delay",)

    def __init__(self, delay: float | None) -> None:
        self.delay = delay

    def __repr__(self) -> str:
        return f"Wait({self.delay!r})"


class FilterStream(Protocol):
    """What a request hook reads of the stream (both codecs' streams are one)."""

    method: bytes
    url: bytes  # the request target after the path policy
    authority: bytes | None
    headers: list[tuple[bytes, bytes]]  # the request's headers, mutable, without pseudo-headers
    xff: bytes | None  # the x-forwarded-for it arrived with (joined), before this hop's
    flags: str  # the access record's response flags
    finished: bool

    @property
    def conn(self) -> Any: ...  # the downstream connection (peer_ip, TLS details)

    def local_reply(self, reply: LocalReply) -> None: ...

    def pause(self, delay: float | None) -> None: ...

    def resume(self) -> None: ...


class BodyEncoder(Protocol):
    """A response body transformation (rule 4b); streaming: memory bounded per stream."""

    def data(self, chunk: bytes) -> bytes: ...

    def end(self) -> bytes: ...


RequestHook = Callable[["FilterStream", "Exchange", float], "LocalReply | Wait | None"]
ResponseHook = Callable[["Exchange", int, list[tuple[bytes, bytes]]], None]
EncodeHook = Callable[["Exchange", int, list[tuple[bytes, bytes]]], "BodyEncoder | None"]
EndHook = Callable[["RequestView", "Exchange", float], None]


@dataclass(frozen=True, slots=True)
class Hooks:
    """One configured filter's hooks (rule 2); ``name`` is its configured name."""

    name: str
    request: RequestHook | None = None
    response: ResponseHook | None = None
    end: EndHook | None = None
    encode: EncodeHook | None = None


class FilterChain:
    """The configured filters' hooks, split by hook so each site walks only its own."""

    __slots__ = ("encode", "end", "names", "request", "response")

    def __init__(self, hooks: list[Hooks]) -> None:
        self.names = tuple(h.name for h in hooks)
        self.request = tuple(h.request for h in hooks if h.request is not None)
        self.response = tuple(h.response for h in reversed(hooks) if h.response is not None)
        self.encode = tuple(h.encode for h in reversed(hooks) if h.encode is not None)
        self.end = tuple(h.end for h in hooks if h.end is not None)


def route_config(x: Exchange, name: str) -> Any:
    """The most specific typed_per_filter_config of the filter named ``name`` for the route
    ``x`` matched (route, virtual host, route configuration), or None."""
    decision = x.decision
    return None if decision is None else decision.filter_configs.get(name)


def run_request(chain: FilterChain, stream: FilterStream, x: Exchange, now: float) -> bool:
    """Rule 3: the request hooks from where the chain stopped (a hook that asked to wait runs
    again); True when all let the request through. A local reply or a wait is carried out on
    ``stream`` here."""
    hooks = chain.request
    at = x.filters_at
    while at < len(hooks):
        verdict = hooks[at](stream, x, now)
        if verdict is not None:
            x.filters_at = at
            if isinstance(verdict, Wait):
                stream.pause(verdict.delay)
            else:
                stream.local_reply(verdict)
            return False
        at += 1
    x.filters_at = at
    return True


def run_response(chain: FilterChain, x: Exchange, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    for hook in chain.response:
        hook(x, status, headers)


def run_encode(
    chain: FilterChain, x: Exchange, status: int, headers: list[tuple[bytes, bytes]]
) -> BodyEncoder | None:
    """Rule 4b: the body encoder of the first encode hook that returns one."""
    for hook in chain.encode:
        encoder = hook(x, status, headers)
        if encoder is not None:
            return encoder
    return None


def run_end(chain: FilterChain, stream: RequestView, x: Exchange, now: float) -> None:
    for hook in chain.end:
        hook(stream, x, now)
