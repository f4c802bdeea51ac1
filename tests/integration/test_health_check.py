"""Active health checks against real servers on loopback: an HTTP server whose answer is flipped,
a TCP server that is stopped, a grpc.aio server with grpc_health's servicer flipping
SERVING / NOT_SERVING. Short intervals, bounded polling (``eventually``), no fixed sleeps."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshproxy.config.model import SocketAddress
from meshproxy.config.policy import HealthCheck
from meshproxy.upstream.health_check import HealthChecker

from .harness import eventually

INTERVAL = 0.05


class FlipHttp:
    """A raw HTTP/1.1 server: answers ``status``, or resets the connection when ``status`` is 0."""

    def __init__(self) -> None:
        self.status = 200
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            if self.status:
                writer.write(f"HTTP/1.1 {self.status} X\r\ncontent-length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


class Recorder:
    """on_change sink: the sequence of transitions, and the checker's counters at each one."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, bool]] = []
        self.checker: HealthChecker | None = None
        self.counters: list[tuple[int, int, int]] = []  # (success, failure, network_failure)

    def __call__(self, key: str, healthy: bool) -> None:
        self.changes.append((key, healthy))
        if self.checker is not None:
            s = self.checker.stats
            self.counters.append((s.success, s.failure, s.network_failure))


def http_check(**kw: object) -> HealthCheck:
    args: dict[str, object] = {
        "kind": "http",
        "timeout": 1.0,
        "interval": INTERVAL,
        "unhealthy_threshold": 3,
        "healthy_threshold": 2,
        "http_path": "/healthz",
    }
    args.update(kw)
    return HealthCheck(**args)  # type: ignore[arg-type]


def tcp_check(**kw: object) -> HealthCheck:
    return http_check(kind="tcp", unhealthy_threshold=1, healthy_threshold=1, **kw)


@pytest.fixture
async def http_server() -> AsyncIterator[FlipHttp]:
    server = FlipHttp()
    await server.start()
    yield server
    await server.stop()


async def checker_for(
    checks: tuple[HealthCheck, ...], hosts: list[tuple[str, SocketAddress]], rec: Recorder
) -> HealthChecker:
    hc = HealthChecker("backend", checks, rec, random.Random(1))
    rec.checker = hc
    hc.set_hosts(hosts)
    hc.start()
    return hc


async def test_http_thresholds_follow_envoy(http_server: FlipHttp) -> None:
    key = f"127.0.0.1:{http_server.port}"
    rec = Recorder()
    hc = await checker_for((http_check(),), [(key, SocketAddress("127.0.0.1", http_server.port))], rec)
    try:
        assert hc.status(key) == "unknown"  # no probe has run yet: not healthy
        # First pass: healthy at once (no healthy_threshold on the first check).
        await eventually(lambda: hc.status(key) == "healthy", what="first check passes")
        assert rec.changes == [(key, True)]
        assert b"GET /healthz HTTP/1.1" in http_server.requests[0]
        assert b"host: backend\r\n" in http_server.requests[0]  # defaults to the cluster name

        # Network failures (connection reset) need unhealthy_threshold = 3 in a row.
        http_server.status = 0
        _, _, net_before = rec.counters[0]
        await eventually(lambda: hc.status(key) == "unhealthy", what="three network failures")
        assert rec.changes == [(key, True), (key, False)]
        assert rec.counters[1][2] == net_before + 3

        # Back to 200: healthy_threshold = 2 passes in a row.
        http_server.status = 200
        await eventually(lambda: hc.status(key) == "healthy", what="recovery")
        assert rec.changes == [(key, True), (key, False), (key, True)]
        assert rec.counters[2][0] == rec.counters[1][0] + 2

        # An explicit unexpected status is immediately unhealthy (Envoy: threshold ignored).
        http_server.status = 503
        await eventually(lambda: hc.status(key) == "unhealthy", what="503 marks unhealthy")
        assert rec.counters[3][1] == rec.counters[2][1] + 1  # the first failure decided
        last = hc.last_results(key)[0]
        assert last is not None and not last.ok and last.detail == "503"
        assert hc.stats.healthy == 0
    finally:
        await hc.close()
    assert hc.stats.attempt >= hc.stats.success + hc.stats.failure


async def test_http_expected_status_ranges_and_host(http_server: FlipHttp) -> None:
    key = f"127.0.0.1:{http_server.port}"
    rec = Recorder()
    check = http_check(expected_statuses=((200, 300), (404, 405)), http_host="svc.local")
    http_server.status = 404
    hc = await checker_for((check,), [(key, SocketAddress("127.0.0.1", http_server.port))], rec)
    try:
        await eventually(lambda: hc.status(key) == "healthy", what="404 is expected")
        assert b"host: svc.local\r\n" in http_server.requests[0]
        http_server.status = 300  # end of a range is exclusive
        await eventually(lambda: hc.status(key) == "unhealthy", what="300 is not expected")
    finally:
        await hc.close()


async def test_first_failure_is_unhealthy_and_removed_hosts_stop(http_server: FlipHttp) -> None:
    key = f"127.0.0.1:{http_server.port}"
    http_server.status = 500
    rec = Recorder()
    hc = await checker_for((http_check(),), [(key, SocketAddress("127.0.0.1", http_server.port))], rec)
    try:
        await eventually(lambda: rec.changes == [(key, False)], what="first check fails")
        hc.set_hosts([])
        assert hc.status(key) == "unknown"
        await eventually(lambda: not any(t for t in asyncio.all_tasks() if "health_check" in t.get_name()))
        seen = len(http_server.requests)
        # No probe is in flight or scheduled any more: wait for a later probe of a second host.
        other = FlipHttp()
        await other.start()
        try:
            hc.set_hosts([("other", SocketAddress("127.0.0.1", other.port))])
            await eventually(lambda: len(other.requests) >= 3, what="probes of the new host")
            assert len(http_server.requests) == seen
        finally:
            await other.stop()
    finally:
        await hc.close()


async def test_probe_timeout_is_a_network_failure() -> None:
    # A server that accepts and never answers.
    conns: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rec = Recorder()
    hc = await checker_for(
        (http_check(timeout=0.05, unhealthy_threshold=1),), [("h", SocketAddress("127.0.0.1", port))], rec
    )
    try:
        await eventually(lambda: rec.changes == [("h", False)], what="timeout")
        last = hc.last_results("h")[0]
        assert last is not None and last.detail == "timeout" and last.network
    finally:
        await hc.close()
        for w in conns:
            w.close()
        server.close()
        await server.wait_closed()


async def test_tcp_send_receive_and_stopped_server() -> None:
    async def pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if await reader.readexactly(4) == b"ping":
                writer.write(b"po")
                await writer.drain()
                writer.write(b"ng!")  # split across writes: the matcher must buffer
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(pong, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    check = HealthCheck(
        kind="tcp",
        timeout=1.0,
        interval=INTERVAL,
        unhealthy_threshold=2,
        healthy_threshold=1,
        tcp_send=b"ping",
        tcp_receive=(b"po", b"ng"),
    )
    rec = Recorder()
    hc = await checker_for((check,), [("t", SocketAddress("127.0.0.1", port))], rec)
    try:
        await eventually(lambda: hc.status("t") == "healthy", what="tcp ping/pong")
        server.close()
        await server.wait_closed()
        await eventually(lambda: hc.status("t") == "unhealthy", what="server stopped")
        last = hc.last_results("t")[0]
        assert last is not None and last.network
        assert rec.changes == [("t", True), ("t", False)]
    finally:
        await hc.close()


async def test_tcp_wrong_answer_fails_and_connect_only_passes() -> None:
    async def wrong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"nope")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(wrong, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    base = {
        "kind": "tcp",
        "timeout": 1.0,
        "interval": INTERVAL,
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
    }
    strict = HealthCheck(**base, tcp_receive=(b"pong",))  # type: ignore[arg-type]
    connect_only = HealthCheck(**base)  # type: ignore[arg-type]
    rec1, rec2 = Recorder(), Recorder()
    hc1 = await checker_for((strict,), [("w", SocketAddress("127.0.0.1", port))], rec1)
    hc2 = await checker_for((connect_only,), [("w", SocketAddress("127.0.0.1", port))], rec2)
    try:
        await eventually(lambda: rec1.changes == [("w", False)], what="wrong bytes fail")
        await eventually(lambda: rec2.changes == [("w", True)], what="connect-only passes")
    finally:
        await hc1.close()
        await hc2.close()
        server.close()
        await server.wait_closed()


async def test_grpc_health_serving_flips() -> None:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set("echo.Echo", health_pb2.HealthCheckResponse.SERVING)
    check = HealthCheck(
        kind="grpc",
        timeout=1.0,
        interval=INTERVAL,
        unhealthy_threshold=3,
        healthy_threshold=2,
        grpc_service_name="echo.Echo",
    )
    rec = Recorder()
    hc = await checker_for((check,), [("g", SocketAddress("127.0.0.1", port))], rec)
    try:
        await eventually(lambda: hc.status("g") == "healthy", what="SERVING")
        await servicer.set("echo.Echo", health_pb2.HealthCheckResponse.NOT_SERVING)
        await eventually(lambda: hc.status("g") == "unhealthy", what="NOT_SERVING")
        last = hc.last_results("g")[0]
        assert last is not None and last.detail == "NOT_SERVING" and not last.network
        await servicer.set("echo.Echo", health_pb2.HealthCheckResponse.SERVING)
        await eventually(lambda: hc.status("g") == "healthy", what="SERVING again")
        assert rec.changes == [("g", True), ("g", False), ("g", True)]
        # An unknown service is a gRPC error (NOT_FOUND): a network-type failure, thresholded.
        hc2 = await checker_for(
            (HealthCheck(kind="grpc", timeout=1.0, interval=INTERVAL, unhealthy_threshold=1,
                         healthy_threshold=1, grpc_service_name="missing"),),
            [("g", SocketAddress("127.0.0.1", port))],
            Recorder(),
        )  # fmt: skip
        try:
            await eventually(lambda: hc2.status("g") == "unhealthy", what="NOT_FOUND")
            last = hc2.last_results("g")[0]
            assert last is not None and last.detail == "grpc NOT_FOUND" and last.network
        finally:
            await hc2.close()
    finally:
        await hc.close()
        await server.stop(None)


async def test_two_checks_both_must_pass(http_server: FlipHttp) -> None:
    tcp_only = HealthCheck(
        kind="tcp", timeout=1.0, interval=INTERVAL, unhealthy_threshold=1, healthy_threshold=1
    )
    key = "h"
    rec = Recorder()
    hc = await checker_for(
        (http_check(), tcp_only), [(key, SocketAddress("127.0.0.1", http_server.port))], rec
    )
    try:
        await eventually(lambda: hc.status(key) == "healthy", what="both pass")
        http_server.status = 503  # TCP still connects; HTTP fails
        await eventually(lambda: hc.status(key) == "unhealthy", what="one check fails")
        assert rec.changes == [(key, True), (key, False)]
    finally:
        await hc.close()


async def test_on_change_errors_do_not_stop_the_loop(http_server: FlipHttp) -> None:
    calls: list[bool] = []

    def broken(key: str, healthy: bool) -> None:
        calls.append(healthy)
        raise RuntimeError("caller bug")

    hc = HealthChecker("backend", (http_check(),), broken, random.Random(1))
    hc.set_hosts([("h", SocketAddress("127.0.0.1", http_server.port))])
    hc.start()
    try:
        await eventually(lambda: calls == [True], what="first change")
        http_server.status = 503
        await eventually(lambda: calls == [True, False], what="loop survived the callback error")
    finally:
        await hc.close()
