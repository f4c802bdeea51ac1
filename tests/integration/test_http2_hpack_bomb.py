"""The HPACK amplification attack (issue 12, finding 11) against a child-process proxy.

One dynamic-table entry ``a: ""`` (33 bytes as RFC 7541 §4.1 counts it) and then one byte per
reference to it: 1,800 references are 1.8 KB on the wire and decode to 1,800 header fields,
still inside the 60 KiB ``max_request_headers_kb``. Three connections each open 200 such
streams and never end them (about 1.1 MB sent in all). Without a field-count bound the proxy
decoded, validated and kept all 1.08 million fields. With ``max_headers_count`` (100) enforced
while decoding, the first block ends the connection with GOAWAY ENHANCE_YOUR_CALM. The
figures (RSS growth, an HTTP/1.1 client's latency on another listener) are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import time
from collections.abc import AsyncIterator

from h2.errors import ErrorCodes
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, PingFrame, SettingsFrame

from .harness import bootstrap, cluster, http_listener, proxy_process, route
from .upstreams import raw_upstream

H2 = {"http2_protocol_options": {}}
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REFERENCES = 1800
STREAMS = 200
CONNECTIONS = 3


def block(first: bool) -> bytes:
    """GET / with ``REFERENCES`` one-byte references to dynamic-table entry 62."""
    out = bytearray(b"\x82\x86\x84")  # :method GET, :scheme http, :path / (static table)
    out += b"\x01\x04test"  # :authority test, literal without indexing
    if first:
        out += b"\x40\x01a\x00"  # a: "" with incremental indexing: dynamic entry 62
    out += b"\xbe" * REFERENCES
    return bytes(out)


def attack_bytes() -> bytes:
    frames = [PREFACE, SettingsFrame(0).serialize()]
    for i in range(STREAMS):
        frame = HeadersFrame(2 * i + 1, data=block(i == 0), flags=["END_HEADERS"])  # no END_STREAM
        frames.append(frame.serialize())
    frames.append(PingFrame(0, opaque_data=b"pingpong").serialize())
    return b"".join(frames)


async def attack(port: int, wire: bytes) -> str:
    """Send ``wire``; return how the proxy answered: "goaway <code>", "closed" or "pinged"
    (every frame before the PING was processed and the connection still stands)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    buf = b""
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(wire)
            await writer.drain()
        async with asyncio.timeout(30):
            while True:
                try:
                    data = await reader.read(65536)
                except ConnectionError:
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
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def silent_h2_upstream() -> AsyncIterator[int]:
    """Accepts and reads, never answers: streams sent to it stay open."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    async with raw_upstream(serve) as port:
        yield port


async def http1_get(port: int) -> tuple[bytes, float]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return head.split(b"\r\n", 1)[0], time.perf_counter() - started


async def test_hpack_amplification_is_cut_at_max_headers_count(tmp_path: pathlib.Path) -> None:
    direct = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}
    async with silent_h2_upstream() as upstream:
        doc = bootstrap(
            [http_listener([route("/", "silent")], name="h2"), http_listener([direct], name="plain")],
            [cluster("silent", upstream, **H2)],
        )
        with proxy_process(doc, tmp_path) as proxy:
            status, baseline = await http1_get(proxy.port("plain"))
            assert status == b"HTTP/1.1 200 OK"
            rss_before = proxy.rss_bytes()
            wire = attack_bytes()
            done = asyncio.Event()
            latencies: list[float] = []

            async def meanwhile() -> None:
                while not done.is_set() and len(latencies) < 10_000:
                    status, took = await http1_get(proxy.port("plain"))
                    assert status == b"HTTP/1.1 200 OK"
                    latencies.append(took)

            client = asyncio.ensure_future(meanwhile())
            started = time.perf_counter()
            outcomes = await asyncio.gather(*(attack(proxy.port("h2"), wire) for _ in range(CONNECTIONS)))
            took = time.perf_counter() - started
            done.set()
            await client
            status, after = await http1_get(proxy.port("plain"))
            growth = proxy.rss_bytes() - rss_before
            print(
                f"hpack bomb: {CONNECTIONS * len(wire)} bytes sent; outcomes {outcomes} in {took:.2f} s;"
                f" RSS growth {growth / 2**20:.1f} MiB; HTTP/1.1 GET {baseline * 1000:.1f} ms before,"
                f" {len(latencies)} during (max {max(latencies, default=0) * 1000:.1f} ms),"
                f" {after * 1000:.1f} ms after"
            )
            assert outcomes == ["goaway ENHANCE_YOUR_CALM"] * CONNECTIONS
            assert status == b"HTTP/1.1 200 OK"
            assert growth < 16 * 2**20
