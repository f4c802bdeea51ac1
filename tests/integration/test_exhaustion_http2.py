"""The exhaustion suite (issue 12), HTTP/2: header-block floods (HPACK amplification,
CONTINUATION without end, oversized blocks) and slow readers that never open their flow-control
window, each against a child-process proxy while an HTTP/2 prober and an HTTP/1.1 keep-alive
prober keep asking on the same listener; every prober request must succeed. The tools and the
summary report are in ``exhaustion.py``; the HTTP/1.1, TCP, descriptor and TLS attacks in
``test_exhaustion.py``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import pathlib
import socket
from collections.abc import Iterator

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from hyperframe.frame import ContinuationFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame, SettingsFrame

from .exhaustion import RSS_RETURNED, TIMEOUT, H2Prober, MiB, Prober, report, under_attack, wait_for
from .harness import ProxyProcess, bootstrap, cluster, http_listener, proxy_process, route
from .upstreams import threaded_upstream

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    yield
    report()


@contextlib.contextmanager
def h2_proxy(tmp_path: pathlib.Path) -> Iterator[ProxyProcess]:
    """A proxy whose listener speaks HTTP/1.1 and HTTP/2 (prior knowledge) to one upstream."""
    with (
        threaded_upstream() as up,
        proxy_process(bootstrap([http_listener([route()])], [cluster("backend", up)]), tmp_path) as proxy,
    ):
        yield proxy


def answer_to(port: int, wire: bytes) -> str:
    """Sends ``wire`` on a new connection; how the proxy answered: "goaway <code>", "closed",
    or "pinged" (every frame before a final PING was processed and the connection stands)."""
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with contextlib.suppress(OSError):  # the proxy may close before reading all of it
            sock.sendall(wire)
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return "closed"
            if not data:
                return "closed"
            buf += data
            while len(buf) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
                if len(buf) < 9 + length:
                    break
                frame.parse_body(memoryview(buf[9 : 9 + length]))
                buf = buf[9 + length :]
                if isinstance(frame, GoAwayFrame):
                    return f"goaway {ErrorCodes(frame.error_code).name}"
                if isinstance(frame, PingFrame) and "ACK" in frame.flags:
                    return "pinged"


def in_parallel(port: int, wires: list[bytes]) -> list[str]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda wire: answer_to(port, wire), wires))


def hpack_bomb(references: int = 1800, streams: int = 200) -> bytes:
    """One dynamic-table entry ``a: ""`` (33 bytes as RFC 7541 §4.1 counts it), then one byte
    per reference to it: 1,800 references are 1.8 KB on the wire and decode to 1,800 fields,
    inside the 60 KiB ``max_request_headers_kb``; ``streams`` such blocks, never ended, then a
    PING. Without a field-count bound the proxy decoded and kept every field (3 connections:
    1.08 million, +104 MiB and 4 s of CPU)."""
    frames = [PREFACE, SettingsFrame(0).serialize()]
    for i in range(streams):
        block = bytearray(b"\x82\x86\x84\x01\x04test")  # GET http / (static), :authority test
        if i == 0:
            block += b"\x40\x01a\x00"  # a: "" with incremental indexing: dynamic entry 62
        block += b"\xbe" * references
        frames.append(HeadersFrame(2 * i + 1, data=bytes(block), flags=["END_HEADERS"]).serialize())
    frames.append(PingFrame(0, opaque_data=b"pingpong").serialize())
    return b"".join(frames)


def continuation_flood(frames: int = 200) -> bytes:
    """HEADERS without END_HEADERS, then CONTINUATION frames of 1 KB fields that never end the
    block (CVE-2024-27316: a proxy that buffers the block until its end grows without bound)."""
    h2 = H2Connection(H2Configuration(client_side=True))
    h2.initiate_connection()
    head = HeadersFrame(1, data=h2.encoder.encode([(":method", "GET"), (":path", "/"), (":scheme", "http")]))
    out = [h2.data_to_send(), head.serialize()]
    for _ in range(frames):
        out.append(ContinuationFrame(1, data=h2.encoder.encode([("x-filler", "a" * 1000)])).serialize())
    return b"".join(out)


def oversized_block() -> bytes:
    """One request whose single 70 KB header is over ``max_request_headers_kb`` (60)."""
    h2 = H2Connection(H2Configuration(client_side=True))
    h2.initiate_connection()
    headers = [
        (":method", "GET"),
        (":path", "/"),
        (":scheme", "http"),
        (":authority", "t"),
        ("x-big", "b" * 70_000),
    ]
    h2.send_headers(1, headers, end_stream=True)
    return h2.data_to_send()


def test_hpack_amplification_is_cut_at_max_headers_count(tmp_path: pathlib.Path) -> None:
    """Finding 11: three connections each send 200 HPACK-amplified blocks (about 1.1 MB in
    all). ``max_headers_count`` (100) is enforced while decoding, so the first block ends each
    connection with GOAWAY ENHANCE_YOUR_CALM and memory stays flat."""
    wire = hpack_bomb()
    with h2_proxy(tmp_path) as proxy:
        port = proxy.port()
        name = "HPACK amplification: 3 x 200 blocks of 1,800 references"
        with under_attack(name, proxy, h2 := H2Prober(port), h1 := Prober(port)) as row:
            outcomes = in_parallel(port, [wire] * 3)
            h2.requests_made(50)
            assert proxy.admin("/ready")[0] == 200
        overflows = proxy.stats()["http.http.http2_header_overflow"]
    assert outcomes == ["goaway ENHANCE_YOUR_CALM"] * 3
    assert overflows == 3
    assert row["rss_peak_mib"] - row["rss_before_mib"] < RSS_RETURNED / MiB
    assert h2.errors == [] and h1.errors == []


def test_header_block_floods_are_refused(tmp_path: pathlib.Path) -> None:
    """Finding 11: 50 connections flood CONTINUATION frames that never end their block and 50
    send one 70 KB header block. Each is ended with GOAWAY (or closed) and counted, well before
    the flood is buffered; memory stays bounded."""
    n = 50
    with h2_proxy(tmp_path) as proxy:
        port = proxy.port()
        name = "HTTP/2 header floods: 50 CONTINUATION floods, 50 oversized blocks"
        with under_attack(name, proxy, h2 := H2Prober(port), h1 := Prober(port)) as row:
            outcomes = in_parallel(port, [continuation_flood()] * n + [oversized_block()] * n)
            h2.requests_made(50)
            assert proxy.admin("/ready")[0] == 200
        stats = proxy.stats()
    print(f"CONTINUATION floods: {set(outcomes[:n])}; oversized blocks: {set(outcomes[n:])}")
    ended = {"goaway PROTOCOL_ERROR", "goaway ENHANCE_YOUR_CALM", "closed"}
    assert set(outcomes) <= ended, outcomes
    assert stats["http.http.http2_rx_messaging_error"] == 2 * n  # each connection's error, once
    assert stats["http.http.http2_header_overflow"] == n
    assert row["rss_peak_mib"] - row["rss_before_mib"] < RSS_RETURNED / MiB
    assert h2.errors == [] and h1.errors == []


def stalled_h2_reader(port: int, streams: int, size: int) -> socket.socket:
    """An HTTP/2 client that opens ``streams`` GETs for ``size`` bytes each and then neither
    reads nor sends WINDOW_UPDATE: flow control (65,535 bytes per stream) bounds what the
    proxy may send, and the proxy must stop reading the upstream rather than queue the rest."""
    h2 = H2Connection(H2Configuration(client_side=True))
    h2.initiate_connection()
    for i in range(streams):
        headers = [(":method", "GET"), (":path", f"/bytes/{size}"), (":scheme", "http"), (":authority", "t")]
        h2.send_headers(2 * i + 1, headers, end_stream=True)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    sock.sendall(h2.data_to_send())
    return sock


def test_http2_slow_readers_cost_bounded_memory_which_is_returned_after(tmp_path: pathlib.Path) -> None:
    """Finding 7 over HTTP/2: 20 connections of 10 streams each ask for 32 MiB per stream and
    never open their windows nor read. The peak is bounded and the memory comes back after
    they leave."""
    connections, streams = 20, 10
    with h2_proxy(tmp_path) as proxy:
        port = proxy.port()
        name = "HTTP/2 slow readers: 20 connections x 10 streams x 32 MiB"
        with (
            under_attack(name, proxy, h2 := H2Prober(port), h1 := Prober(port)) as row,
            contextlib.ExitStack() as readers,
        ):
            for _ in range(connections):
                readers.callback(stalled_h2_reader(port, streams, 32 * MiB).close)
            wait_for(
                lambda: proxy.stats()["http.http.downstream_rq_active"] >= connections * streams,
                "every stream admitted",
            )
            h2.requests_made(50)
            assert proxy.admin("/ready")[0] == 200
    held, kept = row["rss_peak_mib"] - row["rss_before_mib"], row["rss_after_mib"] - row["rss_before_mib"]
    assert held < 100, f"{connections * streams} stalled streams held {held:.0f} MiB"
    assert kept < RSS_RETURNED / MiB, f"{kept:.0f} MiB still held after the readers left"
    assert h2.errors == [] and h1.errors == []
