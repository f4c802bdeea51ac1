"""The HTTP/1.1 request parser, both twins (``_h1_c`` and ``_h1_py``): what it frames and refuses.

The integration suites (smuggling, framing, hardening, limits) drive it through the proxy; these
tests pin the parser's own contract: the events for a byte stream, the same however it is split,
the head it hands over, the refusal (status and body) for each rule of ``_h1_py``'s docstring.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from twins import import_twin

from meshproxy.http.errors import MessageRefused

LIMIT = 1024


@pytest.fixture(params=["c", "py"], scope="module")
def h1(request: pytest.FixtureRequest) -> ModuleType:
    return import_twin("meshproxy.http._h1", request.param)


class Recorder:
    """A protocol that records what the parser reports; tunnels every upgrade it is offered."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_message_begin(self) -> None:
        self.events.append("begin")

    def on_head(self, head: Any) -> bool:
        self.events.append(head_fields(head))
        return bool(head.upgrading)

    def on_body(self, body: bytes) -> None:
        if self.events and isinstance(self.events[-1], bytes):
            self.events[-1] += body  # pieces depend on the split, not the body
        else:
            self.events.append(bytes(body))

    def on_message_complete(self) -> None:
        self.events.append("complete")


def head_fields(head: Any) -> dict[str, Any]:
    names = (
        "method target http10 keep_alive headers authority request_id xff xfp upgrade upgrading "
        "expect chunked content_length underscores has_body"
    )
    return {name: getattr(head, name) for name in names.split()}


def parse(
    h1: ModuleType, pieces: list[bytes], *, limit: int = LIMIT, fields: int = 100, drop: bool = False
) -> list[Any]:
    """Every event for ``pieces`` fed in order, ending in ("tunnel", rest) or ("refused", ...)."""
    recorder = Recorder()
    parser = h1.RequestParser(recorder, limit, fields, drop)
    for i, piece in enumerate(pieces):
        try:
            rest = parser.feed(piece)
        except MessageRefused as exc:
            return [*recorder.events, ("refused", exc.status, exc.body)]
        if rest is not None:
            return [*recorder.events, ("tunnel", rest + b"".join(pieces[i + 1 :]))]
    return recorder.events


def every_split(h1: ModuleType, data: bytes, **options: Any) -> list[Any]:
    """The events for ``data`` whole, asserted equal to those for each two-piece split and for
    one byte at a time."""
    whole = parse(h1, [data], **options)
    for cut in range(1, len(data)):
        assert parse(h1, [data[:cut], data[cut:]], **options) == whole, cut
    assert parse(h1, [data[i : i + 1] for i in range(len(data))], **options) == whole
    return whole


def test_a_get_and_a_post_pipelined(h1: ModuleType) -> None:
    data = (
        b"\r\nGET /a?b HTTP/1.1\r\nHost: Example.COM:80\r\nX-A: 1 \r\nx-forwarded-for: 1.1.1.1\r\n"
        b"X-Forwarded-For: 2.2.2.2\r\n\r\n"
        b"POST /u HTTP/1.0\r\nContent-Length: 3\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\nabc"
    )
    begin1, get, done1, begin2, post, body, done2 = every_split(h1, data)
    assert (begin1, done1, begin2, done2) == ("begin", "complete", "begin", "complete")
    assert get["method"] == b"GET" and get["target"] == b"/a?b" and not get["http10"]
    assert get["authority"] == b"example.com:80" and get["xff"] == b"1.1.1.1, 2.2.2.2"
    assert get["headers"] == [(b"x-a", b"1")] and get["keep_alive"] and not get["has_body"]
    assert post["http10"] and post["keep_alive"] and post["content_length"] == 3
    assert post["headers"] == [(b"content-length", b"3")]  # x-hop named by Connection: removed
    assert body == b"abc"


def test_chunked_body_with_extensions_and_trailers(h1: ModuleType) -> None:
    data = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'3;name=value;q="a\\"b"\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Sum: 1\r\n\r\n'
    )
    events = every_split(h1, data)
    assert events[1]["chunked"] and events[2:] == [b"abc0123456789abcdef", "complete"]


def test_an_upgrade_hands_the_rest_over(h1: ModuleType) -> None:
    data = (
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"\x81\x00GET / HTTP/1.1"
    )
    events = every_split(h1, data)
    assert events[1]["upgrading"] and events[1]["upgrade"] == b"websocket"
    assert events[2:] == ["complete", ("tunnel", b"\x81\x00GET / HTTP/1.1")]


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, b"malformed request line"),
        (b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400, b"malformed request line"),
        (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, b"malformed request line"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400, b"unsupported HTTP version"),
        (b"GET /x#y HTTP/1.1\r\nHost: a\r\n\r\n", 400, b"request target with a fragment"),
        (b"GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n", 400, b"malformed request target"),
        (b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400, b"bare LF"),
        (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400, b"bare CR"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400, b"obsolete line folding"),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, b"invalid header field name"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
            400,
            b"invalid character in a header field value",
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, b"duplicate Host header"),
        (b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400, b"invalid Host header"),
        (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400, b"invalid Host header"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: foo\r\n\r\n", 400, b"unsupported Expect value"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab",
            400,
            b"duplicate Content-Length",
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\na", 400, b"invalid Content-Length"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000000000\r\n\r\n",
            400,
            b"Content-Length over 18 digits",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
            400,
            b"Content-Length with Transfer-Encoding",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
            b"transfer codings other than chunked are not supported",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            400,
            b"chunked must be the final transfer coding",
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            b"Transfer-Encoding in an HTTP/1.0 request",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\na\r\n",
            400,
            b"invalid chunk size",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
            400,
            b"invalid chunk size",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1; a=b\r\na\r\n",
            400,
            b"invalid chunk extension",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            400,
            b"chunk data not followed by CRLF",
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 100 + b"\r\n", 431, b"too many header fields"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * LIMIT + b"\r\n\r\n",
            431,
            b"request header block too large",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=" + b"b" * LIMIT,
            431,
            b"request trailers or chunk extensions too large",
        ),
    ],
)
def test_refusals(h1: ModuleType, data: bytes, status: int, reason: bytes) -> None:
    *_, (kind, got_status, body) = every_split(h1, data)
    assert (kind, got_status) == ("refused", status)
    assert body.endswith(reason)


def test_an_incomplete_head_is_cut_at_the_limit_not_later(h1: ModuleType) -> None:
    start = b"GET / HTTP/1.1\r\nX: "
    assert parse(h1, [start + b"a" * (LIMIT - len(start) - 1)])[-1] == "begin"  # one byte short
    assert parse(h1, [start + b"a" * (LIMIT - len(start))])[-1][0] == "refused"  # no room for its end


def test_underscores_counted_and_dropped_on_request(h1: ModuleType) -> None:
    data = b"GET / HTTP/1.1\r\nHost: a\r\nX_A: 1\r\nX-B: 2\r\n\r\n"
    kept = parse(h1, [data])[1]
    dropped = parse(h1, [data], drop=True)[1]
    assert kept["underscores"] == dropped["underscores"] == 1
    assert kept["headers"] == [(b"x_a", b"1"), (b"x-b", b"2")] and dropped["headers"] == [(b"x-b", b"2")]


def test_http10_and_connection_close_decide_keep_alive(h1: ModuleType) -> None:
    assert not parse(h1, [b"GET / HTTP/1.0\r\n\r\n"])[1]["keep_alive"]
    assert not parse(h1, [b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"])[1]["keep_alive"]
    assert parse(h1, [b"CONNECT a:1 HTTP/1.1\r\n\r\n"])[1]["upgrading"]
