"""The libnghttp2 codec against its twin (h2): the same bytes in, the same events out.

A scripted h2 peer (the independent implementation) writes a connection's worth of frames:
requests with bodies and trailers, never-indexed fields, resets, window updates, SETTINGS, PING,
GOAWAY. Those bytes, cut at points a seeded rng chooses, go to a server connection of each codec
(``_codec_c.new_connection`` and ``_codec_py.new_connection``); the events, normalised (a frame
may arrive in several reads), must be the same. Each server answers through the same API calls,
and what it wrote is read back by a fresh h2 peer, whose events must match too. The client side is
tested the same way against a scripted h2 server. Without the compiled module the tests skip
(or fail under MESHPROXY_REQUIRE_EXTENSIONS, as every twin suite does).
"""

from __future__ import annotations

import itertools
import random
from types import ModuleType
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import DenialOfServiceError, ProtocolError, StreamClosedError
from h2.settings import SettingCodes
from hpack import Encoder, NeverIndexedHeaderTuple
from hyperframe.frame import ContinuationFrame, HeadersFrame
from twins import import_twin

from meshproxy.http2 import _codec_py

SETTINGS = {
    SettingCodes.MAX_CONCURRENT_STREAMS: 100,
    SettingCodes.INITIAL_WINDOW_SIZE: 65535,
    SettingCodes.MAX_HEADER_LIST_SIZE: 16384,
    SettingCodes.HEADER_TABLE_SIZE: 4096,
}
MAX_HEADER_LIST = 16384
MAX_HEADERS = 100
SEEDS = range(24)


@pytest.fixture(scope="module")
def codec_c() -> ModuleType:
    return import_twin("meshproxy.http2._codec", "c")


def _server(codec: ModuleType) -> Any:
    conn = codec.new_connection(
        client=False, settings=SETTINGS, max_header_list=MAX_HEADER_LIST, max_headers=MAX_HEADERS
    )
    conn.initiate_connection()
    conn.increment_flow_control_window(1 << 20)  # as H2Peer.start widens the connection window
    return conn


def _client(codec: ModuleType) -> Any:
    conn = codec.new_connection(
        client=True,
        settings={**SETTINGS, SettingCodes.ENABLE_PUSH: 0},
        max_header_list=MAX_HEADER_LIST,
        max_headers=MAX_HEADERS,
    )
    conn.initiate_connection()
    return conn


def _h2_peer(client: bool) -> H2Connection:
    peer = H2Connection(H2Configuration(client_side=client, header_encoding=None))
    peer.initiate_connection()
    return peer


def _split(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` cut at a few random points (sometimes inside a frame header)."""
    cuts = (
        sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 12))))
        if len(data) > 1
        else []
    )
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _feed(conn: Any, data: bytes, rng: random.Random) -> list[Any]:
    events: list[Any] = []
    for piece in _split(data, rng):
        events.extend(conn.receive_data(piece))
    return events


HEADER_EVENTS = ("RequestReceived", "ResponseReceived", "TrailersReceived", "InformationalResponseReceived")


def normalise(events: list[Any], settings_keys: set[int] | None = None) -> list[tuple[Any, ...]]:
    """Events as comparable tuples: settings by their new values (``settings_keys`` only, when
    given), header fields with whether they are never-indexed, DATA merged (``merge_data``)."""
    out: list[tuple[Any, ...]] = []
    for event in events:
        name = type(event).__name__
        sid = getattr(event, "stream_id", 0)
        if name == "DataReceived":
            out.append((name, sid, event.data, event.flow_controlled_length))
        elif name in HEADER_EVENTS:
            headers = [(f[0], f[1], isinstance(f, NeverIndexedHeaderTuple)) for f in event.headers]
            out.append((name, sid, headers, getattr(event, "stream_ended", None) is not None))
        elif name == "StreamReset":
            out.append((name, sid, int(event.error_code)))
        elif name == "WindowUpdated":
            out.append((name, sid, event.delta))
        elif name == "RemoteSettingsChanged":
            changed = {
                int(code): change.new_value
                for code, change in event.changed_settings.items()
                if settings_keys is None or int(code) in settings_keys
            }
            out.append((name, 0, changed))
        elif name in ("PingReceived", "PingAckReceived"):
            out.append((name, 0, event.ping_data))
        elif name == "ConnectionTerminated":
            out.append((name, 0, int(event.error_code), event.last_stream_id, event.additional_data or b""))
        else:
            out.append((name, sid))
    return merge_data(out)


def merge_data(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """DATA of one stream that arrived back to back as one event (frame sizes may differ)."""
    out: list[tuple[Any, ...]] = []
    for event in events:
        if out and event[0] == "DataReceived" and out[-1][0] == "DataReceived" and out[-1][1] == event[1]:
            _, sid, data, flow = out.pop()
            out.append((event[0], sid, data + event[2], flow + event[3]))
        else:
            out.append(event)
    return out


def by_stream(
    events: list[tuple[Any, ...]], drop: tuple[str, ...] = ("WindowUpdated",)
) -> dict[int, list[Any]]:
    """Normalised events per stream, 0 for the connection: each codec may interleave streams
    its own way, and sends WINDOW_UPDATE at its own thresholds (``drop``)."""
    streams: dict[int, list[tuple[Any, ...]]] = {}
    for event in events:
        if event[0] not in drop:
            streams.setdefault(event[1], []).append(event)
    return {sid: merge_data(seq) for sid, seq in streams.items()}


# ---------------------------------------------------------------------------- the client's script


def _request(rng: random.Random, sid: int, method: bytes) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = [
        (b":method", method),
        (b":scheme", b"https"),
        (b":authority", b"svc.mesh:8443"),
        (b":path", b"/p/%d?q=%d" % (sid, rng.randrange(1000))),
    ]
    for i in range(rng.randint(0, 6)):
        value = bytes(rng.choice(b"abcdefghij0123456789") for _ in range(rng.randint(0, 40)))
        name = b"x-field-%d" % rng.randrange(8)
        headers.append(
            NeverIndexedHeaderTuple(name, value) if i == 0 and rng.random() < 0.5 else (name, value)
        )
    if rng.random() < 0.3:
        headers.append(NeverIndexedHeaderTuple(b"authorization", b"Bearer %d" % sid))
    return headers


def client_script(seed: int, *, goaway: bool = True) -> tuple[bytes, set[int], bool, H2Connection]:
    """A client connection's bytes for ``seed``: the ids of the streams it reset, whether it
    ended with GOAWAY (``goaway=False`` leaves that out, all else equal), and the h2 client."""
    rng = random.Random(seed)
    peer = _h2_peer(client=True)
    reset: set[int] = set()
    budget = 60_000  # inside the server's initial windows: the script reads nothing back
    for _ in range(rng.randint(3, 7)):
        sid = peer.get_next_available_stream_id()
        shape = rng.choice(("get", "body", "trailers", "reset", "window"))
        if shape == "get":
            peer.send_headers(sid, _request(rng, sid, b"GET"), end_stream=True)
            continue
        peer.send_headers(sid, _request(rng, sid, b"POST"))
        size = min(budget, rng.randint(0, 20_000))
        budget -= size
        body = rng.randbytes(size)
        while body:
            take = rng.randint(1, 16_000)
            peer.send_data(sid, body[:take], pad_length=rng.choice((None, 0, 7)))
            body = body[take:]
        if shape == "reset":
            peer.reset_stream(sid, ErrorCodes.CANCEL)
            reset.add(sid)
        elif shape == "trailers":
            peer.send_headers(sid, [(b"x-checksum", b"%d" % seed)], end_stream=True)
        else:
            if shape == "window":
                peer.increment_flow_control_window(rng.randint(1, 1 << 16), stream_id=sid)
                peer.increment_flow_control_window(rng.randint(1, 1 << 16))
            peer.end_stream(sid)
    peer.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1 << 17, SettingCodes.MAX_FRAME_SIZE: 1 << 15})
    peer.ping(rng.randbytes(8))
    closed = goaway and rng.random() < 0.4
    if closed:
        peer.close_connection(ErrorCodes.NO_ERROR, additional_data=b"bye" if rng.random() < 0.5 else None)
    return peer.data_to_send(), reset, closed, peer


def serve(conn: Any, events: list[Any], reset: set[int]) -> None:
    """The same answers through the same API calls, whichever codec ``conn`` is: a response to
    each request that ended and was not reset, with a body sent as windows allow, and trailers
    on every third stream; received DATA acknowledged."""
    for event in events:
        name = type(event).__name__
        if name == "DataReceived" and event.flow_controlled_length:
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        if name != "StreamEnded" or event.stream_id in reset:
            continue
        sid = event.stream_id
        conn.send_headers(sid, [(b":status", b"200"), (b"x-sid", b"%d" % sid)])
        body = bytes(range(256)) * (sid * 7 % 40)
        while body:
            window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            assert window > 0
            conn.send_data(sid, body[:window])
            body = body[window:]
        if sid % 3 == 0:
            conn.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
        else:
            conn.end_stream(sid)


@pytest.mark.parametrize("seed", SEEDS)
def test_server_events_and_answers_match_h2(codec_c: ModuleType, seed: int) -> None:
    data, reset, closed, _ = client_script(seed)
    events, answers = [], []
    for codec in (codec_c, _codec_py):
        server = _server(codec)
        preface = server.data_to_send()
        received = _feed(server, data, random.Random(seed))
        events.append(normalise(received))
        if not closed:  # after a GOAWAY, h2 sends nothing more
            serve(server, received, reset)
            reader = client_script(seed, goaway=False)[3]  # in the state the script left it
            answer = _feed(reader, preface + server.data_to_send(), random.Random(seed))
            answers.append(by_stream(normalise(answer, set(map(int, SETTINGS)))))
    assert events[0] == events[1]
    assert any(e[0] == "RequestReceived" for e in events[0])
    assert closed == any(e[0] == "ConnectionTerminated" for e in events[0])
    assert answers[:1] == answers[1:]


# ---------------------------------------------------------------------------- the client side


def server_script(seed: int, requests: bytes) -> bytes:
    """An h2 server's answer to ``requests``: responses with bodies, trailers, a 103 before the
    final response, a refused stream, a stream left open, window updates, SETTINGS, PING and,
    for some seeds, GOAWAY."""
    rng = random.Random(seed)
    peer = H2Connection(H2Configuration(client_side=False, header_encoding=None))
    peer.local_settings.max_concurrent_streams = 50
    peer.initiate_connection()
    streams = [e.stream_id for e in peer.receive_data(requests) if type(e).__name__ == "RequestReceived"]
    for sid in streams:
        shape = rng.choice(("body", "trailers", "early", "refused", "open"))
        if shape == "refused":
            peer.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            continue
        if shape == "early":
            peer.send_headers(sid, [(b":status", b"103"), (b"link", b"</a>; rel=preload")])
        peer.send_headers(sid, [(b":status", b"200"), (b"x-sid", b"%d" % sid)])
        body = rng.randbytes(rng.randint(0, 9000))
        while body:
            take = rng.randint(1, 8000)
            peer.send_data(sid, body[:take], pad_length=rng.choice((None, 3)))
            body = body[take:]
        if shape == "trailers":
            peer.send_headers(sid, [(b"grpc-status", b"0"), (b"grpc-message", b"ok")], end_stream=True)
        elif shape != "open":
            peer.end_stream(sid)
    peer.increment_flow_control_window(rng.randint(1, 1 << 20))
    peer.ping(rng.randbytes(8))
    if rng.random() < 0.4:
        peer.close_connection(ErrorCodes.NO_ERROR, last_stream_id=streams[0] if streams else 0)
    return peer.data_to_send()


def send_requests(conn: Any, seed: int) -> bytes:
    """Requests through the codec API (the same calls for either codec): bodies sent as windows
    allow, ended by trailers or by an empty DATA frame."""
    rng = random.Random(seed)
    for _ in range(rng.randint(2, 6)):
        sid = conn.get_next_available_stream_id()
        body = rng.randbytes(rng.choice((0, rng.randint(1, 9000))))
        conn.send_headers(sid, _request(rng, sid, b"POST" if body else b"GET"), end_stream=not body)
        if not body:
            continue
        while body:
            window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            conn.send_data(sid, body[:window])
            body = body[window:]
        if rng.random() < 0.5:
            conn.send_headers(sid, [(b"x-trailer", b"%d" % sid)], end_stream=True)
        else:
            conn.end_stream(sid)
    return conn.data_to_send()


@pytest.mark.parametrize("seed", SEEDS)
def test_client_events_and_requests_match_h2(codec_c: ModuleType, seed: int) -> None:
    clients = [_client(codec) for codec in (codec_c, _codec_py)]
    sent = [send_requests(client, seed) for client in clients]
    requests = []
    for data in sent:  # what each codec wrote, as an independent h2 server reads it
        reader = _h2_peer(client=False)
        requests.append(by_stream(normalise(_feed(reader, data, random.Random(seed)), {1, 2, 3, 4})))
    assert requests[0] == requests[1]
    assert any(e[0] == "RequestReceived" for seq in requests[0].values() for e in seq)
    answer = server_script(seed, sent[1])
    events = [normalise(_feed(client, answer, random.Random(seed + 1))) for client in clients]
    assert events[0] == events[1]
    assert any(e[0] == "ResponseReceived" for e in events[0])


# ---------------------------------------------------------------------------- bounds and errors


def _preface() -> bytes:
    return _h2_peer(client=True).data_to_send()


def _headers_frame(block: list[tuple[bytes, bytes]], encoder: Encoder | None = None, sid: int = 1) -> bytes:
    frame = HeadersFrame(sid)
    frame.data = (encoder or Encoder()).encode(block)
    frame.flags = {"END_HEADERS", "END_STREAM"}
    return frame.serialize()


def _refusal(conn: Any, data: bytes) -> tuple[type[Exception], list[Any]]:
    """What ``conn`` raised for ``data``, and what it wrote, as an h2 client reads it."""
    with pytest.raises(ProtocolError) as raised:
        conn.receive_data(data)
    reader = _h2_peer(client=True)
    return type(raised.value), normalise(reader.receive_data(conn.data_to_send()), set())


GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]


@pytest.mark.parametrize(
    ("block", "accepted"),
    [
        (GET + [(b"x", b"")] * (MAX_HEADERS - len(GET)), True),  # exactly the field count
        (GET + [(b"x", b"")] * (MAX_HEADERS - len(GET) + 1), False),  # one field over it
        ([*GET, (b"x-big", b"v" * 16000)], True),  # under the byte bound
        ([*GET, (b"x-big", b"v" * 16300)], False),  # over it, counted as RFC 7541 §4.1 counts
    ],
)
def test_header_bounds_match_the_twin(
    codec_c: ModuleType, block: list[tuple[bytes, bytes]], accepted: bool
) -> None:
    """Over either bound, both codecs refuse the connection: DenialOfServiceError, and GOAWAY
    ENHANCE_YOUR_CALM on the wire (decoder.py's contract); at the bound, the block is delivered."""
    data = _preface() + _headers_frame(block)
    outcomes = []
    for codec in (codec_c, _codec_py):
        server = _server(codec)
        server.data_to_send()
        if accepted:
            outcomes.append(normalise(server.receive_data(data)))
        else:
            error, written = _refusal(server, data)
            assert error is DenialOfServiceError
            # (h2 acknowledges the client's SETTINGS first; nghttp2 sends only the GOAWAY)
            outcomes.append([e for e in written if e[0] == "ConnectionTerminated"])
            assert outcomes[-1] == [("ConnectionTerminated", 0, ErrorCodes.ENHANCE_YOUR_CALM, 0, b"")]
    assert outcomes[0] == outcomes[1]
    if accepted:
        assert outcomes[0][1][:2] == ("RequestReceived", 1)


def test_an_hpack_bomb_is_refused_while_decoding(codec_c: ModuleType) -> None:
    """One 4 KB dynamic-table entry, then one-byte references to it: ~1 KB on the wire decoding to
    megabytes. The block is refused at the byte bound, not decoded to the end."""
    encoder = Encoder()
    seed = _headers_frame([*GET, (b"x-bomb", b"b" * 4000)], encoder)
    bomb = _headers_frame(GET + [(b"x-bomb", b"b" * 4000)] * 1000, encoder, sid=3)
    assert len(bomb) < 2000
    for codec in (codec_c, _codec_py):
        server = _server(codec)
        assert normalise(server.receive_data(_preface() + seed))[1][0] == "RequestReceived"
        with pytest.raises(DenialOfServiceError):
            server.receive_data(bomb)


def test_a_continuation_flood_ends_the_connection(codec_c: ModuleType) -> None:
    """CVE-2024-27316's shape: a HEADERS frame followed by endless empty CONTINUATION frames."""
    frame = HeadersFrame(1)
    frame.data = Encoder().encode(GET)[:3]
    flood = frame.serialize() + b"".join(ContinuationFrame(1).serialize() for _ in range(2000))
    for codec in (codec_c, _codec_py):
        server = _server(codec)
        server.data_to_send()
        error, written = _refusal(server, _preface() + flood)
        assert issubclass(error, ProtocolError)
        assert any(e[0] == "ConnectionTerminated" and e[2] != 0 for e in written)


def test_a_connection_error_raises_and_sends_goaway(codec_c: ModuleType) -> None:
    """DATA on stream 0 (RFC 9113 §6.1): a connection error, GOAWAY PROTOCOL_ERROR on both."""
    bad = b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"
    for codec in (codec_c, _codec_py):
        server = _server(codec)
        server.data_to_send()
        error, written = _refusal(server, _preface() + bad)
        assert issubclass(error, ProtocolError)
        assert [e[:3] for e in written if e[0] == "ConnectionTerminated"] == [
            ("ConnectionTerminated", 0, ErrorCodes.PROTOCOL_ERROR)
        ]


def test_streams_we_closed_refuse_further_calls(codec_c: ModuleType) -> None:
    for codec in (codec_c, _codec_py):
        server = _server(codec)
        server.receive_data(_preface() + _headers_frame(GET))
        server.send_headers(1, [(b":status", b"204")], end_stream=True)
        server.data_to_send()
        with pytest.raises(StreamClosedError):
            server.send_data(1, b"late")
        with pytest.raises(StreamClosedError):
            server.reset_stream(1)


# ---------------------------------------------------------------------------- flow control


def test_windows_reopen_only_when_the_proxy_acknowledges(codec_c: ModuleType) -> None:
    """Manual flow control both ways: a 300 KB upload stops at the window until the server codec
    acknowledges what it passed on; a 300 KB download goes out only as the reader's window allows,
    and every byte arrives in order."""
    upload = random.Random(7).randbytes(300_000)
    for codec in (codec_c, _codec_py):
        server = _server(codec)
        client = _h2_peer(client=True)
        client.receive_data(server.data_to_send())
        client.send_headers(1, [(b":method", b"POST"), *GET[1:]])
        received = bytearray()
        unacked = 0
        while len(received) < len(upload):
            window = min(client.local_flow_control_window(1), client.max_outbound_frame_size)
            sent = len(received)
            if window > 0 and sent < len(upload):
                client.send_data(1, upload[sent : sent + window])
                events = server.receive_data(client.data_to_send())
                for event in events:
                    if type(event).__name__ == "DataReceived":
                        unacked += event.flow_controlled_length
                        received += event.data
                continue
            # The window is shut: nothing reopens it until the server acknowledges.
            early = client.receive_data(server.data_to_send())
            assert not any(type(e).__name__ == "WindowUpdated" for e in early)
            server.acknowledge_received_data(unacked, 1)
            unacked = 0
            assert any(
                type(e).__name__ == "WindowUpdated" for e in client.receive_data(server.data_to_send())
            )
        assert bytes(received) == upload

        server.send_headers(1, [(b":status", b"200")])
        expected, rest, got = upload[::-1], upload[::-1], bytearray()
        for _ in range(1000):
            if len(got) == len(expected):
                break
            window = min(server.local_flow_control_window(1), server.max_outbound_frame_size)
            assert window >= 0
            if window and rest:
                server.send_data(1, rest[:window])
                rest = rest[window:]
            for event in client.receive_data(server.data_to_send()):
                if type(event).__name__ == "DataReceived":
                    got += event.data
                    client.acknowledge_received_data(event.flow_controlled_length, 1)
            server.receive_data(client.data_to_send())
        assert bytes(got) == upload[::-1]


# ---------------------------------------------------------------------------- hostile bytes


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """``data`` with a few bytes flipped, a span dropped or repeated (past the 24-byte preface)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(24, len(out))
        kind = rng.randrange(3)
        if kind == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del out[at : at + rng.randint(1, 16)]
        else:
            out[at:at] = out[at : at + rng.randint(1, 64)]
    return bytes(out)


@pytest.mark.parametrize("seed", range(200))
def test_mutated_connections_end_in_events_or_a_protocol_error(codec_c: ModuleType, seed: int) -> None:
    """A bounded fuzz corpus for the compiled parser: the scripted connections, damaged. The codec
    returns events or raises h2's ProtocolError (never another exception, never a crash), and
    once it raised, what it writes ends with a GOAWAY an h2 client can read."""
    data = _mutate(client_script(seed % len(SEEDS))[0], random.Random(seed))
    server = _server(codec_c)
    server.data_to_send()
    try:
        for piece in _split(data, random.Random(seed)):
            server.receive_data(piece)
    except ProtocolError:
        written = normalise(_h2_peer(client=True).receive_data(server.data_to_send()), set())
        assert written[-1][0] == "ConnectionTerminated"
        assert written[-1][2] != ErrorCodes.NO_ERROR
    else:
        server.data_to_send()


def test_a_reset_after_a_reply_follows_its_data(codec_c: ModuleType) -> None:
    """A local reply to a request whose body is still coming, then RST_STREAM(NO_ERROR) (RFC 9113
    §8.1): the client sees the whole reply before the reset, on both codecs."""
    seen = []
    for codec in (codec_c, _codec_py):
        server = _server(codec)
        preface = server.data_to_send()
        client = _h2_peer(client=True)
        client.receive_data(preface)
        client.send_headers(1, [(b":method", b"POST"), *GET[1:]])  # the body never comes
        server.receive_data(client.data_to_send())
        server.send_headers(1, [(b":status", b"408")])
        server.send_data(1, b"request timeout")
        server.end_stream(1)
        server.reset_stream(1, ErrorCodes.NO_ERROR)
        events = normalise(client.receive_data(server.data_to_send()))
        seen.append([e for e in events if e[1] == 1])
    assert seen[0] == seen[1]
    assert [e[0] for e in seen[0]] == ["ResponseReceived", "DataReceived", "StreamEnded", "StreamReset"]


@pytest.mark.parametrize("value", [b"a\r\nx-injected: 1", b"a\x00b", b" padded"])
def test_a_field_h2_refuses_ends_the_connection_on_both(codec_c: ModuleType, value: bytes) -> None:
    data = _preface() + _headers_frame([*GET, (b"x-v", value)])
    for codec in (codec_c, _codec_py):
        server = _server(codec)
        server.data_to_send()
        _, written = _refusal(server, data)
        assert [e[:3] for e in written if e[0] == "ConnectionTerminated"] == [
            ("ConnectionTerminated", 0, ErrorCodes.PROTOCOL_ERROR)
        ]
