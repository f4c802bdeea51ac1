"""Upstream policy on HTTP/2 streams, against grpcio upstreams that fail on purpose.

A gRPC retry on ``unavailable`` that lands (with ``x-envoy-attempt-count``), the per-try
timeout, connect-failure retries to the other host, the max_requests breaker (UNAVAILABLE
with ``x-envoy-overloaded``), outlier ejection from gRPC statuses, ``stream_idle_timeout``
and ``max_stream_duration``; each asserted from the client and from the proxy's counters.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from .grpc_upstream import grpc_server, stubs
from .harness import bootstrap, cluster, eventually, free_port, http_listener, route, running_proxy

H2 = {"http2_protocol_options": {}}
BACKOFF = {"base_interval": "0.001s"}


class Flaky:
    """``test.Echo/Unary`` that fails (or hangs) on its first ``failures`` calls, then echoes."""

    def __init__(self, failures: int = 1, hang: bool = False, code: str = "UNAVAILABLE") -> None:
        self.failures = failures
        self.hang = hang
        self.code = code
        self.attempts: list[str | None] = []

    async def unary(self, request: bytes, context: aio.ServicerContext) -> bytes:
        self.attempts.append(dict(context.invocation_metadata() or ()).get("x-envoy-attempt-count"))
        if len(self.attempts) <= self.failures:
            if self.hang:
                await asyncio.Event().wait()  # hangs until the attempt is cancelled
            await context.abort(grpc.StatusCode[self.code], "failed on purpose")
        return request


@contextlib.asynccontextmanager
async def flaky_server(flaky: Flaky) -> AsyncIterator[int]:
    server = aio.server()
    handler = grpc.unary_unary_rpc_method_handler(flaky.unary)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Unary": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(grace=None)


def doc(ports: list[int], hcm: dict[str, Any] | None = None, **action: Any) -> dict[str, Any]:
    extra = action.pop("cluster_extra", {})
    return bootstrap(
        [http_listener([route("/", "grpc", **action)], name="grpc", **(hcm or {}))],
        [cluster("grpc", *ports, **H2, **extra)],
    )


async def test_unavailable_is_retried_and_the_retry_succeeds() -> None:
    flaky = Flaky(failures=1)
    policy = {"retry_on": "unavailable", "num_retries": 2, "retry_back_off": BACKOFF}
    async with (
        flaky_server(flaky) as port,
        running_proxy(doc([port], retry_policy=policy)) as proxy,
        stubs(proxy.port("grpc")) as s,
    ):
        assert await s.unary(b"hello") == b"hello"
        stats = proxy.cluster_stats("grpc")
        assert flaky.attempts == ["1", "2"]
        assert stats.upstream_rq_retry == 1 and stats.upstream_rq_retry_success == 1
        assert stats.rq_retry_open == 0  # the retry breaker's count went back


async def test_without_a_retry_policy_unavailable_reaches_the_client() -> None:
    flaky = Flaky(failures=1)
    async with (
        flaky_server(flaky) as port,
        running_proxy(doc([port])) as proxy,
        stubs(proxy.port("grpc")) as s,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.unary(b"x")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert flaky.attempts == [None] and proxy.cluster_stats("grpc").upstream_rq_retry == 0


async def test_a_status_not_named_by_retry_on_is_not_retried() -> None:
    flaky = Flaky(failures=1, code="INTERNAL")
    policy = {"retry_on": "unavailable", "num_retries": 2, "retry_back_off": BACKOFF}
    async with (
        flaky_server(flaky) as port,
        running_proxy(doc([port], retry_policy=policy)) as proxy,
        stubs(proxy.port("grpc")) as s,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.unary(b"x")
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert len(flaky.attempts) == 1


async def test_per_try_timeout_retries_a_hung_attempt() -> None:
    flaky = Flaky(failures=1, hang=True)
    policy = {"retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.3s", "retry_back_off": BACKOFF}
    async with (
        flaky_server(flaky) as port,
        running_proxy(doc([port], retry_policy=policy)) as proxy,
        stubs(proxy.port("grpc")) as s,
    ):
        assert await s.unary(b"late") == b"late"
        stats = proxy.cluster_stats("grpc")
        assert stats.upstream_rq_per_try_timeout == 1 and stats.upstream_rq_retry == 1


async def test_a_route_timeout_of_a_second_is_kept_by_the_deadline_tick() -> None:
    # A route timeout of a second or more is an entry in the listener's deadline set (checked
    # every DEADLINE_TICK), not an event-loop timer per stream: seen there while the call hangs,
    # it still ends the call with DEADLINE_EXCEEDED, and the set is empty again afterwards.
    flaky = Flaky(failures=1, hang=True)
    async with (
        flaky_server(flaky) as port,
        running_proxy(doc([port], timeout="1s")) as proxy,
        stubs(proxy.port("grpc")) as s,
    ):
        deadlines = proxy.server.listeners["grpc"].deadlines
        call = asyncio.ensure_future(s.unary(b"x"))
        await eventually(lambda: len(deadlines) == 1, what="the stream's deadline in the tick's set")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert deadlines == set()
        assert proxy.cluster_stats("grpc").upstream_rq_timeout == 1


async def test_connect_failure_is_retried_on_the_other_host() -> None:
    policy = {"retry_on": "connect-failure", "num_retries": 2, "retry_back_off": BACKOFF}
    async with (
        grpc_server() as (port, echo),
        running_proxy(doc([free_port(), port], retry_policy=policy)) as proxy,
    ):
        async with stubs(proxy.port("grpc")) as s:
            replies = [await s.unary(b"%d" % i) for i in range(6)]
        assert replies == [b"%d" % i for i in range(6)] and echo.calls == 6
        stats = proxy.cluster_stats("grpc")
        assert stats.upstream_rq_retry >= 1 and stats.upstream_cx_connect_fail >= 1


async def test_max_requests_breaker_overflows_with_x_envoy_overloaded() -> None:
    breakers = {"circuit_breakers": {"thresholds": [{"max_requests": 1}]}}
    async with (
        grpc_server() as (port, echo),
        running_proxy(doc([port], cluster_extra=breakers)) as proxy,
        stubs(proxy.port("grpc")) as s,
    ):
        slow = asyncio.ensure_future(s.slow(b"x"))
        stats = proxy.cluster_stats("grpc")
        await eventually(lambda: stats.upstream_rq_active == 1, what="the slow call is upstream")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.unary(b"second")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ("x-envoy-overloaded", "true") in tuple(info.value.trailing_metadata())
        assert stats.upstream_rq_pending_overflow == 1 and echo.calls == 0
        slow.cancel()
        await asyncio.wait_for(echo.cancelled.wait(), 5)
        await eventually(lambda: stats.upstream_rq_active == 0, what="the slow call ended")
        assert await s.unary(b"third") == b"third"  # the breaker closed again


async def test_unavailable_responses_eject_the_host() -> None:
    flaky = Flaky(failures=1000)
    outlier = {
        "outlier_detection": {
            "consecutive_5xx": 3,
            "max_ejection_percent": 50,
            "interval": "10s",
            "base_ejection_time": "30s",
        }
    }
    async with (
        flaky_server(flaky) as bad,
        grpc_server() as (good, _echo),
        running_proxy(doc([bad, good], cluster_extra=outlier)) as proxy,
    ):
        async with stubs(proxy.port("grpc")) as s:
            codes = []
            for i in range(12):
                try:
                    await s.unary(b"%d" % i)
                    codes.append("OK")
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code().name)
        stats = proxy.cluster_stats("grpc")
        assert stats.outlier_detection_ejections_enforced_total == 1
        assert codes.count("UNAVAILABLE") == 3 and codes[-4:] == ["OK"] * 4  # the rest went to good
        assert len(flaky.attempts) == 3


async def test_stream_idle_timeout_ends_a_silent_stream() -> None:
    async with (
        grpc_server() as (port, echo),
        running_proxy(doc([port], {"stream_idle_timeout": "1s"})) as proxy,
    ):
        async with stubs(proxy.port("grpc")) as s:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.slow(b"x")
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert info.value.details() == "stream timeout"
        assert proxy.http_stats("grpc").downstream_rq_idle_timeout == 1
        await asyncio.wait_for(echo.cancelled.wait(), 5)


async def test_max_stream_duration_ends_a_long_stream() -> None:
    async with grpc_server() as (port, echo):
        limit = {"max_stream_duration": {"max_stream_duration": "0.3s"}}
        async with running_proxy(doc([port], **limit)) as proxy, stubs(proxy.port("grpc")) as s:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.slow(b"x")
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert proxy.http_stats("grpc").downstream_rq_timeout == 1
            await asyncio.wait_for(echo.cancelled.wait(), 5)


async def test_streams_waiting_for_a_slot_are_pending_requests() -> None:
    # One connection (max_connections) with one stream (max_concurrent_streams): a second call
    # waits as a pending request; a third overflows max_pending_requests with 503 UO.
    extra = {
        "http2_protocol_options": {"max_concurrent_streams": 1},
        "circuit_breakers": {"thresholds": [{"max_connections": 1, "max_pending_requests": 1}]},
    }
    async with grpc_server() as (port, _echo):
        d = bootstrap([http_listener([route("/", "grpc")], name="grpc")], [cluster("grpc", port, **extra)])
        async with running_proxy(d) as proxy, stubs(proxy.port("grpc")) as s:
            stats = proxy.cluster_stats("grpc")
            first = asyncio.ensure_future(s.slow(b"1"))
            await eventually(lambda: stats.upstream_rq_active == 1, what="the first call upstream")
            second = asyncio.ensure_future(s.unary(b"2"))
            await eventually(lambda: stats.upstream_rq_pending_active == 1, what="the second call pending")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.unary(b"3")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert ("x-envoy-overloaded", "true") in tuple(info.value.trailing_metadata())
            first.cancel()
            assert await second == b"2"  # it took the freed slot
            # The first call also waited (for the new connection's SETTINGS), as in Envoy.
            assert stats.upstream_rq_pending_active == 0 and stats.upstream_rq_pending_total == 2
            assert stats.upstream_cx_total == 1 and stats.upstream_rq_pending_overflow == 1


async def test_high_priority_streams_open_connections_within_the_high_limit() -> None:
    # One stream per connection: two hanging HIGH calls open HIGH's two connections and a third
    # waits, while a DEFAULT call gets DEFAULT's own connection at once (not HIGH's, not queued).
    extra = {
        "http2_protocol_options": {"max_concurrent_streams": 1},
        "circuit_breakers": {
            "thresholds": [
                {"priority": "DEFAULT", "max_connections": 1},
                {"priority": "HIGH", "max_connections": 2},
            ]
        },
    }
    routes = [route("/test.Echo/Slow", "grpc", priority="HIGH"), route("/", "grpc")]
    async with grpc_server() as (port, _echo):
        d = bootstrap([http_listener(routes, name="grpc")], [cluster("grpc", port, **extra)])
        async with running_proxy(d) as proxy, stubs(proxy.port("grpc")) as s:
            stats = proxy.cluster_stats("grpc")
            slow = [asyncio.ensure_future(s.slow(b"%d" % i)) for i in range(3)]
            await eventually(lambda: stats.upstream_cx_http2_total == 2, what="two HIGH connections")
            await eventually(lambda: stats.upstream_rq_pending_active == 1, what="the third pending")
            assert await s.unary(b"default") == b"default"
            assert stats.upstream_cx_total == 3 and stats.upstream_cx_http2_total == 3
            for call in slow:
                call.cancel()
