"""Sans-I/O parts of the HTTP/2 path: protocol detection, gRPC mapping, flood counters."""

from __future__ import annotations

from OpenSSL import SSL

from meshproxy.hcm import grpc
from meshproxy.http2.guard import FloodGuard
from meshproxy.listener.detect import PREFACE, classify


def _client_hello(sni: bytes, alpn: list[bytes]) -> bytes:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_alpn_protos(alpn)
    conn = SSL.Connection(ctx, None)
    conn.set_tlsext_host_name(sni)
    conn.set_connect_state()
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        pass
    return conn.bio_read(65536)


def test_client_hello_gives_sni_and_alpn() -> None:
    found = classify(_client_hello(b"api.example.com", [b"h2", b"http/1.1"]))
    assert found is not None
    assert (found.transport_protocol, found.server_name) == ("tls", "api.example.com")
    assert found.application_protocols == ("h2", "http/1.1")


def test_partial_inputs_wait_and_plaintext_is_told_apart() -> None:
    hello = _client_hello(b"a", [b"h2"])
    assert classify(hello[:3]) is None and classify(hello[:40]) is None
    assert classify(PREFACE[:10]) is None
    assert classify(PREFACE).application_protocols == ("h2c",)  # type: ignore[union-attr]
    assert classify(b"GET / HTTP/1.1\r\n").application_protocols == ("http/1.1",)  # type: ignore[union-attr]
    assert classify(b"GE") is None
    assert classify(b"\x00\x01binary").application_protocols == ()  # type: ignore[union-attr]


def test_grpc_status_table_and_timeout() -> None:
    assert [grpc.status_for(s) for s in (404, 503, 504, 401, 418)] == [12, 14, 4, 16, 2]
    assert grpc.parse_timeout(b"100m") == 0.1
    assert grpc.parse_timeout(b"2S") == 2.0
    assert grpc.parse_timeout(b"1x") is None and grpc.parse_timeout(b"m") is None
    assert grpc.percent_encode("é %".encode()) == b"%C3%A9 %25"


def test_flood_guard_counts_control_frames_per_interval() -> None:
    guard = FloodGuard(0.0, max_control=1)
    assert not guard.control(0.1) and guard.control(0.2)
    assert not guard.control(1.5)  # a new interval


def test_premature_resets_trip_at_half_of_the_first_500_streams() -> None:
    guard = FloodGuard(0.0)
    for _ in range(249):
        assert not guard.reset(started=5.0, responded=False, now=5.5)
        guard.stream_closed()
    assert guard.reset(started=5.0, responded=False, now=5.5)  # the 250th


def test_late_or_answered_resets_are_not_premature() -> None:
    guard = FloodGuard(0.0)
    for _ in range(1000):
        assert not guard.reset(started=0.0, responded=False, now=1.5)  # lived over a second
        assert not guard.reset(started=0.0, responded=True, now=0.1)  # a response had begun
        guard.stream_closed()


def test_past_500_streams_the_ratio_is_of_all_closed_streams() -> None:
    guard = FloodGuard(0.0)
    for _ in range(600):
        guard.stream_closed()  # good streams
    for i in range(299):
        assert not guard.reset(started=0.0, responded=False, now=0.5), i
        guard.stream_closed()
    # 300 premature of 900 closed is a third: still fine; pacing buys nothing past half.
    assert not guard.reset(started=0.0, responded=False, now=0.5)
    guard.stream_closed()
    tripped = False
    for _ in range(700):
        tripped = guard.reset(started=0.0, responded=False, now=0.5)
        guard.stream_closed()
        if tripped:
            break
    assert tripped
