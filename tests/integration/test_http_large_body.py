"""Bodies over 100 MiB through a slow reader, with the proxy's memory bounded (backpressure).

The proxy runs as a child process (``proxy_process``) so its resident set size can be read
from ``/proc/<pid>/status`` while 110 MiB flow through it: first with the reader stalled
(the proxy must stop reading from the writer instead of buffering), then drained at full
speed. Downloads come from the aiohttp upstream; uploads go to a raw upstream that pauses
before reading. These tests are synchronous (blocking sockets and threads): the proxy under
test is out of process, so there is no event loop of ours to parametrise.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import pathlib
import socket
import threading
import time
from collections.abc import Iterator

from .harness import ProxyProcess, bootstrap, cluster, http_listener, proxy_process, route
from .upstreams import threaded_upstream

MiB = 1024 * 1024
SIZE = 110 * MiB
RSS_BOUND = 32 * MiB
STALL = 1.5  # seconds the slow side does not read: long enough to buffer it all if unbounded
TIMEOUT = 30.0


class RssSampler:
    """Samples the proxy's VmRSS every 10 ms on a thread; ``peak`` is the highest seen."""

    def __init__(self, proxy: ProxyProcess) -> None:
        self.proxy = proxy
        self.baseline = proxy.rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.proxy.rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _recv_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The response or request head, and whatever body bytes came with it."""
    data = b""
    for _ in range(64):
        chunk = sock.recv(4096)
        assert chunk, f"connection closed before a complete head: {data[:200]!r}"
        data += chunk
        if b"\r\n\r\n" in data:
            break
    else:
        raise AssertionError(f"no end of head in {data[:200]!r}...")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _drain(sock: socket.socket, already: int, total: int) -> int:
    """Read until ``total`` body bytes arrived (or the peer closed); returns how many did."""
    buf = bytearray(1 << 20)
    got = already
    while got < total:
        n = sock.recv_into(buf)
        if n == 0:
            break
        got += n
    return got


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise AssertionError(f"no content-length in {head!r}")


@contextlib.contextmanager
def _proxy(upstream_port: int, workdir: pathlib.Path) -> Iterator[ProxyProcess]:
    doc = bootstrap([http_listener([route()])], [cluster("backend", upstream_port)])
    with proxy_process(doc, workdir) as proxy:
        yield proxy


def test_download_over_100mib_through_stalled_reader_keeps_proxy_memory_bounded(
    tmp_path: pathlib.Path,
) -> None:
    with threaded_upstream() as up, _proxy(up, tmp_path) as proxy:
        with (
            socket.create_connection(("127.0.0.1", proxy.port()), timeout=TIMEOUT) as sock,
            RssSampler(proxy) as rss,
        ):
            sock.sendall(f"GET /bytes/{SIZE} HTTP/1.1\r\nHost: big\r\n\r\n".encode())
            head, first = _recv_head(sock)
            time.sleep(STALL)  # the slow reader under test: not synchronisation
            stalled_growth = rss.growth
            received = _drain(sock, len(first), SIZE)
        assert head.startswith(b"HTTP/1.1 200")
        assert _content_length(head) == SIZE
        assert received == SIZE
        assert stalled_growth < RSS_BOUND, (
            f"proxy grew {stalled_growth / MiB:.1f} MiB while the reader stalled"
        )
        assert rss.growth < RSS_BOUND, f"proxy grew {rss.growth / MiB:.1f} MiB moving {SIZE // MiB} MiB"


class SlowUpstream:
    """A raw upstream that accepts one request, stalls, then reads and counts its body."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = 0
        self.stall_over = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.listener.settimeout(TIMEOUT)
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            head, first = _recv_head(conn)
            time.sleep(STALL)  # the slow reader under test: not synchronisation
            self.stall_over.set()
            self.received = _drain(conn, len(first), _content_length(head))
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%d" % (len(str(self.received)), self.received)
            )

    def __enter__(self) -> SlowUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=TIMEOUT)
        self.listener.close()


def test_upload_over_100mib_to_stalled_upstream_keeps_proxy_memory_bounded(tmp_path: pathlib.Path) -> None:
    block = memoryview(b"y" * MiB)

    def send_body(sock: socket.socket) -> None:
        sock.sendall(f"POST /upload HTTP/1.1\r\nHost: big\r\nContent-Length: {SIZE}\r\n\r\n".encode())
        for _ in range(SIZE // MiB):
            sock.sendall(block)  # blocks while the proxy, correctly, stops reading

    with SlowUpstream() as up, _proxy(up.port, tmp_path) as proxy:
        with (
            socket.create_connection(("127.0.0.1", proxy.port()), timeout=TIMEOUT) as sock,
            RssSampler(proxy) as rss,
            concurrent.futures.ThreadPoolExecutor(1) as pool,
        ):
            sending = pool.submit(send_body, sock)
            assert up.stall_over.wait(TIMEOUT), "the upstream never received the request"
            stalled_growth = rss.growth  # the peak over the whole stall
            sending.result(timeout=TIMEOUT)
            head, body = _recv_head(sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert int(body) == SIZE
        assert up.received == SIZE
        assert stalled_growth < RSS_BOUND, (
            f"proxy grew {stalled_growth / MiB:.1f} MiB while the upstream stalled"
        )
        assert rss.growth < RSS_BOUND, f"proxy grew {rss.growth / MiB:.1f} MiB moving {SIZE // MiB} MiB"
