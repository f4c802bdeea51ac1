"""The HTTP filter chain without sockets (hcm/filters.py through the Exchange): the configured
order, a local reply stopping the chain, a wait resuming at the next filter, response hooks in
reverse order on upstream responses and local replies, end hooks, and per-route config lookup.

Filters here are small recording hooks installed on a context compiled from a bootstrap
(``test_exchange.context``); ``now`` is a number the test moves.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from test_exchange import T0, Request, context

from meshproxy.hcm.context import LocalReply
from meshproxy.hcm.exchange import Exchange
from meshproxy.hcm.filters import FilterChain, Hooks, Wait, route_config
from meshproxy.hcm.headers import edit_response, reply_headers
from meshproxy.router.table import RouteTable


class Stream:
    """A carrier as the codecs' streams are, for the filter hooks: it records what it was told."""

    def __init__(self) -> None:
        self.method = b"GET"
        self.url = b"/"
        self.authority: bytes | None = b"svc"
        self.headers: list[tuple[bytes, bytes]] = []
        self.flags = "-"
        self.finished = False
        self.conn: Any = None
        self.replies: list[LocalReply] = []
        self.pauses: list[float | None] = []

    def local_reply(self, reply: LocalReply) -> None:
        self.replies.append(reply)

    def pause(self, delay: float | None) -> None:
        self.pauses.append(delay)

    def resume(self) -> None:
        raise AssertionError("the exchange never resumes a stream itself")


def recorder(seen: list[str], name: str, verdict: Any = None) -> Hooks:
    def request(stream: Any, x: Exchange, now: float) -> Any:
        seen.append(f"{name}@{now:g}")
        stream.headers.append((b"x-seen", name.encode()))
        return verdict

    def response(x: Exchange, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        seen.append(f"{name}:{status}")
        headers.append((b"x-filter", name.encode()))

    def end(stream: Any, x: Exchange, now: float) -> None:
        seen.append(f"{name}:end")

    return Hooks(name, request, response, end)


def started(chain: FilterChain, url: bytes = b"/") -> tuple[Exchange, Stream]:
    ctx = context()
    ctx.filters = chain
    x = Exchange(ctx, T0)
    assert x.match(b"svc", url, []) is None
    return x, Stream()


def test_request_hooks_run_in_the_configured_order_and_may_mutate_headers() -> None:
    seen: list[str] = []
    x, stream = started(FilterChain([recorder(seen, "a"), recorder(seen, "b")]))
    assert x.request_filters(stream, T0) is True  # type: ignore[arg-type]
    assert seen == [f"a@{T0:g}", f"b@{T0:g}"]
    assert stream.headers == [(b"x-seen", b"a"), (b"x-seen", b"b")]
    assert stream.replies == [] and stream.pauses == []


def test_a_local_reply_stops_the_chain_and_goes_to_the_stream() -> None:
    seen: list[str] = []
    teapot = LocalReply(418, b"no", "FI")
    x, stream = started(FilterChain([recorder(seen, "a", teapot), recorder(seen, "b")]))
    assert x.request_filters(stream, T0) is False  # type: ignore[arg-type]
    assert stream.replies == [teapot]
    assert seen == [f"a@{T0:g}"]


def test_a_wait_pauses_the_stream_and_the_chain_resumes_by_asking_the_same_filter_again() -> None:
    seen: list[str] = []

    def hold_once(stream: Any, x: Exchange, now: float) -> Wait | None:
        seen.append(f"hold@{now:g}")
        state = x.filter_state = x.filter_state or {}
        return None if state.pop("hold", False) else state.setdefault("hold", Wait(0.25))

    x, stream = started(FilterChain([recorder(seen, "a"), Hooks("hold", hold_once), recorder(seen, "c")]))
    assert x.request_filters(stream, T0) is False  # type: ignore[arg-type]
    assert stream.pauses == [0.25]
    assert x.request_filters(stream, T0 + 0.25) is True  # what the stream's resume() calls
    assert seen == [f"a@{T0:g}", f"hold@{T0:g}", f"hold@{T0 + 0.25:g}", f"c@{T0 + 0.25:g}"]
    assert x.request_filters(stream, T0 + 1) is True  # nothing runs twice
    assert len(seen) == 4


def test_response_hooks_run_in_reverse_order_on_local_replies_after_the_route_mutations() -> None:
    seen: list[str] = []
    ctx = context(
        routes=[{"match": {"prefix": "/"}, "direct_response": {"status": 204}, **_ADD_ROUTE_HEADER}]
    )
    ctx.filters = FilterChain([recorder(seen, "a"), recorder(seen, "b")])
    x = Exchange(ctx, T0)
    assert x.match(b"svc", b"/", []) is None
    reply = x.route(b"svc")
    assert isinstance(reply, LocalReply)
    assert reply_headers(x, reply) == [(b"x-route", b"1"), (b"x-filter", b"b"), (b"x-filter", b"a")]
    assert seen == ["b:204", "a:204"]


def test_response_hooks_edit_an_upstream_response() -> None:
    seen: list[str] = []
    x, _ = started(FilterChain([recorder(seen, "a"), Hooks("quiet"), recorder(seen, "b")]))
    headers = [(b"content-type", b"text/plain")]
    edit_response(x, 503, headers, (), True)
    assert headers == [(b"content-type", b"text/plain"), (b"x-filter", b"b"), (b"x-filter", b"a")]
    assert seen == ["b:503", "a:503"]


def test_end_hooks_observe_the_finished_request_in_order() -> None:
    seen: list[str] = []
    x, _ = started(FilterChain([recorder(seen, "a"), recorder(seen, "b")]))
    x.finish(T0 + 1, Request(), "HTTP/1.1", None)
    assert seen == ["a:end", "b:end"]


_ADD_ROUTE_HEADER = {"response_headers_to_add": [{"header": {"key": "x-route", "value": "1"}}]}


def test_per_route_config_is_the_most_specific_levels() -> None:
    base = context(
        routes=[
            {"match": {"prefix": "/own"}, "route": {"cluster": "backend"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "backend"}},
        ]
    ).routes.config
    vhost = base.virtual_hosts[0]
    own, other = vhost.routes
    own = replace(own, filter_configs=(("f", "route"),))
    vhost = replace(vhost, routes=(own, other), filter_configs=(("f", "vhost"), ("g", "vhost")))
    config = replace(base, virtual_hosts=(vhost,), filter_configs=(("f", "config"), ("h", "config")))
    table = RouteTable(config)
    ctx = context()
    ctx.routes = table
    x = Exchange(ctx, T0)
    assert x.match(b"svc", b"/own", []) is None
    assert [route_config(x, n) for n in "fghi"] == ["route", "vhost", "config", None]
    y = Exchange(ctx, T0)
    assert y.match(b"svc", b"/other", []) is None
    assert route_config(y, "f") == "vhost"
    assert route_config(Exchange(ctx, T0), "f") is None  # not matched yet
