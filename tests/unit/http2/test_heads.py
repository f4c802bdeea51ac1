"""Header blocks checked and split: the libnghttp2 codec's ``request_head`` and ``response_head``
against the twin's (``fields``).

Each block is encoded by an h2 client that re-checks nothing, and received by a server connection
of each codec; what the connection accepts goes through that codec's ``request_head`` under each
``headers_with_underscores`` action. The results (routing inputs, the fields that cross with their
never-indexed marks, the underscored names dropped) or the refusals must be the same. The compiled
one skips the checks libnghttp2 already made, so a block it refuses at the connection (a name that
is not a token, a ``:method`` that is not one) must be refused by the twin too. ``response_head``
relies on nothing the codec checked (an HTTP/1.1 upstream's heads go through it too), so it is
compared on the blocks themselves.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes
from hpack import NeverIndexedHeaderTuple
from twins import import_twin

from meshproxy.http2 import _codec_py
from meshproxy.http2.fields import Malformed, Underscored, response_head, split

SETTINGS = {SettingCodes.MAX_CONCURRENT_STREAMS: 100, SettingCodes.MAX_HEADER_LIST_SIZE: 16384}
ACTIONS = ("ALLOW", "DROP_HEADER", "REJECT_REQUEST")
GET = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"Api.Example:8443"),
    (b":path", b"/a?b=c"),
]

BLOCKS = [
    GET,
    [*GET, (b"x-forwarded-for", b"10.0.0.1"), (b"x-forwarded-proto", b"http"), (b"x-request-id", b"r1")],
    [*GET, (b"content-type", b"text/plain"), (b"content-type", b"application/grpc+proto")],
    # One cookie field each: h2 joins several into one (RFC 9113 §8.2.3), nghttp2 does not.
    [*GET, (b"authorization", b"Bearer x"), (b"cookie", b"short")],
    [*GET, (b"proxy-authorization", b"Basic y"), (b"cookie", b"c" * 40)],
    [*GET, (b"x_under", b"1"), (b"x-after", b"2"), (b"x_two", b"3")],
    [*GET, (b"te", b"trailers"), (b"x-forwarded-client-cert", b"By=spoofed"), (b"accept", b"*/*")],
    [(b":method", b"OPTIONS"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"*")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"host", b"Host.Example")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/p#frag")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", "/é".encode())],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"relative")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"user@a"), (b":path", b"/")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a b"), (b":path", b"/")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/"), (b"x_u", b"1")],
    [*GET, (b"x(y)", b"1")],  # not a token: libnghttp2 refuses it, the twin's check does
    [(b":method", b"G T"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")],
]


@pytest.fixture(scope="module")
def codec_c() -> ModuleType:
    return import_twin("meshproxy.http2._codec", "c")


def _received(codec: ModuleType, block: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]] | None:
    """The block as the codec's server connection hands it over; None if it refused it."""
    client = H2Connection(
        H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False)
    )
    client.initiate_connection()
    client.send_headers(1, block, end_stream=True)
    server = codec.new_connection(client=False, settings=SETTINGS, max_header_list=16384, max_headers=100)
    server.initiate_connection()
    try:
        events = server.receive_data(client.data_to_send())
    except ProtocolError:
        return None
    (request,) = [e for e in events if type(e).__name__ == "RequestReceived"]
    return list(request.headers)


def _outcome(codec: ModuleType, block: list[tuple[bytes, bytes]], action: str) -> Any:
    headers = _received(codec, block)
    if headers is None:
        return "refused by the connection"
    try:
        head = codec.request_head(headers, action)
    except Malformed as exc:
        return ("refused", type(exc), str(exc))
    *inputs, kept, dropped = head
    return (*inputs, [(n, v, isinstance(f, NeverIndexedHeaderTuple)) for f in kept for n, v in [f]], dropped)


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("block", BLOCKS)
def test_the_compiled_split_matches_the_twin(
    codec_c: ModuleType, block: list[tuple[bytes, bytes]], action: str
) -> None:
    compiled = _outcome(codec_c, block, action)
    twin = _outcome(_codec_py, block, action)
    if compiled == "refused by the connection":
        assert twin == "refused by the connection" or twin[0] == "refused"
    else:
        assert compiled == twin


def test_the_split_reads_what_routing_needs() -> None:
    # The twin's results, spelled out (the differential above compares the codecs to these).
    block = [
        *GET,
        (b"x-forwarded-for", b"10.0.0.1"),
        (b"x_under", b"1"),
        (b"content-type", b"application/grpc"),
        (b"authorization", b"Bearer x"),
        (b"accept", b"*/*"),
    ]
    method, url, authority, scheme, xff, xfp, rid, ctype, kept, dropped = _codec_py.request_head(
        block, "DROP_HEADER"
    )
    assert (method, url, authority, scheme) == (b"GET", b"/a?b=c", b"api.example:8443", b"https")
    assert (xff, xfp, rid, ctype, dropped) == (b"10.0.0.1", None, None, b"application/grpc", 1)
    assert kept == [
        (b"content-type", b"application/grpc"),
        (b"authorization", b"Bearer x"),
        (b"accept", b"*/*"),
    ]
    assert isinstance(kept[1], NeverIndexedHeaderTuple) and not isinstance(kept[2], NeverIndexedHeaderTuple)
    with pytest.raises(Underscored):
        _codec_py.request_head(block, "REJECT_REQUEST")
    assert split([(b":path", b"/"), (b"host", b"H")])[:3] == (b"", b"/", b"h")


RESPONSES = [
    [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"server", b"origin")],
    [(b":status", b"200"), (b"grpc-status", b"14"), (b"grpc-message", b"down"), (b"grpc-status", b"2")],
    [(b":status", b"404"), (b"connection", b"close"), (b"transfer-encoding", b"chunked"), (b"te", b"x")],
    [(b":status", b"302"), (b"set-cookie", b"a=b"), (b"cookie", b"short"), (b"authorization", b"x")],
    [(b":status", b"20x")],
    [(b":status", b"2000")],
    [(b":status", b"")],
    [(b":status", b"099"), (b"x", b"y")],
    [(b"x", b"no status")],
]


@pytest.mark.parametrize("block", RESPONSES)
def test_the_compiled_response_split_matches_the_twin(
    codec_c: ModuleType, block: list[tuple[bytes, bytes]]
) -> None:
    def seen(codec: ModuleType) -> Any:
        status, grpc_status, out = codec.response_head(block)
        return status, grpc_status, [(f[0], f[1], isinstance(f, NeverIndexedHeaderTuple)) for f in out]

    assert seen(codec_c) == seen(_codec_py)


def test_the_response_split_reads_status_and_grpc_status() -> None:
    status, grpc_status, out = response_head(RESPONSES[1])
    assert (status, grpc_status) == (200, b"2")
    assert out == RESPONSES[1][1:]
    assert response_head(RESPONSES[4])[0] == 0 and response_head(RESPONSES[7])[0] == 99
    _, _, out = response_head(RESPONSES[3])
    assert [type(f) is NeverIndexedHeaderTuple for f in out] == [False, True, True]
