"""The HTTP/1.1 response parser, both twins: the head it hands over, the framing, each refusal.

``upstream.py`` and the upstream-abuse suite drive it through the proxy; these tests pin its
own contract, every input also fed split at each byte boundary.
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
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_head(self, head: Any) -> None:
        names = "status http10 keep_alive lines content_length chunked"
        self.events.append({name: getattr(head, name) for name in names.split()})

    def on_body(self, body: bytes) -> None:
        if self.events and isinstance(self.events[-1], bytes):
            self.events[-1] += body
        else:
            self.events.append(bytes(body))

    def on_message_complete(self) -> None:
        self.events.append("complete")


def parse_response(
    h1: ModuleType, pieces: list[bytes], *, head_request: bool = False, limit: int = LIMIT, fields: int = 100
) -> list[Any]:
    """Every event for ``pieces``, ending in ("tunnel", rest) or ("refused", status, body)."""
    recorder = Recorder()
    parser = h1.ResponseParser(recorder, limit, fields)
    parser.reset(head_request)
    for i, piece in enumerate(pieces):
        try:
            rest = parser.feed(piece)
        except MessageRefused as exc:
            return [*recorder.events, ("refused", exc.status, exc.body)]
        if rest is not None:
            return [*recorder.events, ("tunnel", rest + b"".join(pieces[i + 1 :]))]
    return recorder.events


def every_split(h1: ModuleType, data: bytes, **options: Any) -> list[Any]:
    whole = parse_response(h1, [data], **options)
    for cut in range(1, len(data)):
        assert parse_response(h1, [data[:cut], data[cut:]], **options) == whole, cut
    return whole


def test_lines_pass_through_less_what_this_hop_removes(h1: ModuleType) -> None:
    data = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Odd:  spaced \r\nKeep-Alive: 5\r\n"
        b"Connection: X-Hop, close\r\nX-Hop: 1\r\nContent-Length: 3\r\nX-Last: z\r\n\r\nabc"
    )
    head, body, done = every_split(h1, data)
    assert head["status"] == 200 and not head["keep_alive"] and head["content_length"] == 3
    assert (
        head["lines"] == b"Content-Type: text/plain\r\nX-Odd:  spaced \r\nContent-Length: 3\r\nX-Last: z\r\n"
    )
    assert (body, done) == (b"abc", "complete")


def test_chunked_close_delimited_and_bodiless(h1: ModuleType) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX-T: 1\r\n\r\n"
    head, body, done = every_split(h1, chunked)
    assert head["chunked"] and head["lines"] == b"" and (body, done) == (b"ab", "complete")
    until_close = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\neverything"
    head, body = every_split(h1, until_close)
    assert not head["keep_alive"] and body == b"everything"
    head_reply = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    assert every_split(h1, head_reply, head_request=True)[1:] == ["complete"]
    assert every_split(h1, b"HTTP/1.1 204 No Content\r\n\r\n")[1:] == ["complete"]


def test_a_101_hands_the_rest_over(h1: ModuleType) -> None:
    events = every_split(h1, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00")
    assert events[0]["status"] == 101 and events[1:] == [("tunnel", b"\x81\x00")]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"HTTP/2.0 200 OK\r\n\r\n", b"HTTP/2.0 is not an HTTP/1.x response"),
        (b"HTTP/1.1 999 Odd\r\n\r\n", b"status 999 is outside 100-599"),
        (b"HTTP/1.1 20 OK\r\n\r\n", b"malformed status line"),
        (b"HTTP/1.1 200 O\x00K\r\n\r\n", b"a control byte in the status line's reason phrase"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", b"a transfer coding other than chunked"),
        (
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"Transfer-Encoding in an HTTP/1.0 response",
        ),
        (b"HTTP/1.1 100 Continue\r\nContent-Length: 1\r\n\r\n", b"interim 100 response with Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", b"duplicate Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab", b"bytes after the complete response"),
        (
            b"HTTP/1.1 200 OK\r\nX: " + b"a" * LIMIT + b"\r\n\r\n",
            b"response head or trailers over 1024 bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 101 + b"\r\n",
            b"more than 100 response header or trailer fields",
        ),
        (b"HTTP/1.1 103 Early\r\nX: 1\r\n\r\n" * 60, b"response head or trailers over 1024 bytes"),
    ],
)
def test_refusals_are_502_with_their_reason(h1: ModuleType, data: bytes, reason: bytes) -> None:
    *_, (kind, status, body) = every_split(h1, data)
    assert (kind, status) == ("refused", 502)
    assert body.startswith(reason)


def test_reset_arms_the_parser_for_the_next_response(h1: ModuleType) -> None:
    recorder = Recorder()
    parser = h1.ResponseParser(recorder, LIMIT, 100)
    for _ in range(2):
        parser.reset(False)
        assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx") is None
    assert [e for e in recorder.events if not isinstance(e, dict)] == [b"x", "complete", b"x", "complete"]
