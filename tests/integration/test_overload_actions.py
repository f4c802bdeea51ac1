"""Every overload monitor and every overload action, through a running proxy handling HTTP.

Each test starts a real proxy from a bootstrap with Envoy's ``overload_manager``, puts real
pressure on one monitor (memory touched, descriptors opened, the event loop blocked,
connections held open), and shows the action firing at its threshold on real HTTP/1.1 and
HTTP/2 traffic, counted on the admin ``/stats``, with ``/ready`` answering 200 throughout, and
the action recovering when the pressure goes. The matrix (with ``test_overload_wiring.py``):

| monitor | action | test |
|---|---|---|
| fixed_heap (RSS) | stop_accepting_requests (503, ``x-envoy-overloaded``) | heap |
| file descriptors | reject_incoming_connections | descriptors |
| event-loop lag | disable_http_keepalive (HTTP/1.1 close, HTTP/2 GOAWAY) | lag |
| downstream connections (scaled) | reduce_timeouts (idle timeout) | connections |
| downstream connections | reduce_timeouts (max connection duration) | max_connection_duration |
| downstream connections | stop_accepting_connections | test_overload_wiring.py |

Every wait is an event (the runtime's state callback) or a read with a bound; nothing asserts on
timing. The figures (time to fire, to recover, requests shed) are printed for docs/overload.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from meshproxy.overload.config import (
    DISABLE_HTTP_KEEPALIVE,
    DOWNSTREAM_CONNECTIONS,
    EVENT_LOOP_LAG,
    FILE_DESCRIPTORS,
    FIXED_HEAP,
    REDUCE_TIMEOUTS,
    REJECT_INCOMING_CONNECTIONS,
    STOP_ACCEPTING_REQUESTS,
)
from meshproxy.overload.monitors import open_fds, rss_bytes
from meshproxy.overload.state import OverloadState

from .h2_client import RawH2
from .harness import Proxy, bootstrap, cluster, http_listener, route, running_proxy
from .upstreams import aiohttp_upstream

BOUND = 10.0  # seconds any one transition or exchange may take before the test fails
TYPED_STRUCT = "type.googleapis.com/xds.type.v3.TypedStruct"
MONITOR_CONFIG: dict[str, Callable[[float], dict[str, Any]]] = {
    FIXED_HEAP: lambda m: {
        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
        "max_heap_size_bytes": int(m),
    },
    DOWNSTREAM_CONNECTIONS: lambda m: {
        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
        "DownstreamConnectionsConfig",
        "max_active_downstream_connections": int(m),
    },
    FILE_DESCRIPTORS: lambda m: {
        "@type": TYPED_STRUCT,
        "type_url": "type.googleapis.com/meshproxy.overload.v1.FileDescriptors",
        "value": {"max_open_fds": int(m)},
    },
    EVENT_LOOP_LAG: lambda m: {
        "@type": TYPED_STRUCT,
        "type_url": "type.googleapis.com/meshproxy.overload.v1.EventLoopLag",
        "value": {"max_lag": f"{m}s"},
    },
}


def overload_doc(up: int, monitor: str, maximum: float, action: dict[str, Any], **hcm: Any) -> dict[str, Any]:
    doc = bootstrap([http_listener([route()], **hcm)], [cluster("backend", up)])
    doc["overload_manager"] = {
        "refresh_interval": "0.02s",
        "resource_monitors": [{"name": monitor, "typed_config": MONITOR_CONFIG[monitor](maximum)}],
        "actions": [action],
    }
    return doc


def threshold(name: str, monitor: str, value: float) -> dict[str, Any]:
    return {"name": name, "triggers": [{"name": monitor, "threshold": {"value": value}}]}


class Watch:
    """Waits, with a bound, for the server's overload runtime to publish a state."""

    def __init__(self, proxy: Proxy) -> None:
        self.runtime = proxy.server.overload
        self.waiters: list[tuple[Callable[[OverloadState], bool], asyncio.Event, list[float]]] = []
        self.runtime.subscribe(self._on_state)

    def _on_state(self, state: OverloadState) -> None:
        for predicate, event, when in self.waiters:
            if predicate(state) and not event.is_set():
                when.append(time.monotonic())  # when the runtime published it, not when we woke
                event.set()

    async def until(self, predicate: Callable[[OverloadState], bool], since: float | None = None) -> float:
        """Seconds from ``since`` (the pressure's start; default now) until the state held."""
        start = time.monotonic() if since is None else since
        if predicate(self.runtime.state):
            return time.monotonic() - start
        event, when = asyncio.Event(), []
        self.waiters.append((predicate, event, when))
        await asyncio.wait_for(event.wait(), BOUND)
        return when[0] - start


@asynccontextmanager
async def overloaded_proxy(doc: dict[str, Any]) -> AsyncIterator[tuple[Proxy, Watch]]:
    async with running_proxy(doc) as proxy:
        yield proxy, Watch(proxy)


async def admin(proxy: Proxy, path: str) -> tuple[int, bytes]:
    def get() -> tuple[int, bytes]:
        with urllib.request.urlopen(proxy.admin_url + path, timeout=BOUND) as resp:
            return resp.status, resp.read()

    return await asyncio.to_thread(get)


async def stats(proxy: Proxy) -> dict[str, Any]:
    status, body = await admin(proxy, "/stats?format=flat")
    assert status == 200
    return json.loads(body)


async def assert_ready(proxy: Proxy) -> None:
    status, _ = await admin(proxy, "/ready")
    assert status == 200


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str = "/"
) -> tuple[bytes, bytes]:
    """One keep-alive HTTP/1.1 request; (head, body) of its response (a Content-Length body)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    body = await asyncio.wait_for(reader.readexactly(length), BOUND)
    return head, body


async def one_request(port: int, path: str = "/") -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await exchange(reader, writer, path)
    finally:
        writer.close()


def figure(name: str, **values: Any) -> None:
    print(f"overload figure {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


async def test_heap_pressure_sheds_new_requests_with_503_and_recovers() -> None:
    """fixed_heap x stop_accepting_requests: with 96 MiB touched above a threshold 48 MiB above
    the starting RSS, every new request is 503 with ``x-envoy-overloaded: true`` and flag OL
    (the upstream never sees it), counted as ``downstream_rq_overload_close``; freed, served."""
    size = 96 << 20
    async with aiohttp_upstream() as up:
        base = rss_bytes()
        maximum = base + 2 * size
        value = (base + size // 2) / maximum
        doc = overload_doc(up, FIXED_HEAP, maximum, threshold(STOP_ACCEPTING_REQUESTS, FIXED_HEAP, value))
        async with overloaded_proxy(doc) as (proxy, watch):
            port = proxy.port()
            head, _ = await one_request(port)
            assert head.startswith(b"HTTP/1.1 200")
            pressure = time.monotonic()
            buffer = bytearray(size)
            buffer[:: os.sysconf("SC_PAGE_SIZE")] = b"\x01" * (size // os.sysconf("SC_PAGE_SIZE"))
            fire = await watch.until(lambda s: s.shed_fraction == 1.0, pressure)
            shed = 0
            for _ in range(20):
                head, _ = await one_request(port, "/echo")
                assert head.startswith(b"HTTP/1.1 503"), head
                assert b"x-envoy-overloaded: true" in head.lower()
                shed += 1
            await assert_ready(proxy)
            seen = await stats(proxy)
            assert seen["http.http.downstream_rq_overload_close"] == shed
            assert seen["cluster.backend.upstream_rq_total"] == 1  # only the request before
            assert seen[f"overload.{STOP_ACCEPTING_REQUESTS}.active"] == 1
            assert seen[f"overload.{FIXED_HEAP}.pressure"] >= int(value * 100)
            pressure = time.monotonic()
            del buffer  # an allocation this large is an mmap: freeing it returns it to the kernel
            recover = await watch.until(lambda s: s.shed_fraction == 0.0, pressure)
            head, _ = await one_request(port)
            assert head.startswith(b"HTTP/1.1 200")
            seen = await stats(proxy)
            assert seen[f"overload.{STOP_ACCEPTING_REQUESTS}.active"] == 0
            assert seen[f"overload.{STOP_ACCEPTING_REQUESTS}.activations"] == 1
            assert seen["http.http.downstream_rq_overload_close"] == shed
            await assert_ready(proxy)
    figure(
        "heap",
        threshold=f"{value:.2f} of {maximum >> 20} MiB",
        fire=f"{fire:.3f}s",
        recover=f"{recover:.3f}s",
        shed=shed,
    )


async def test_descriptor_pressure_rejects_connections_and_recovers() -> None:
    """file descriptors x reject_incoming_connections: 40 descriptors opened past a threshold
    30 above the starting count; each new connection is accepted and closed at once, counted
    as ``downstream_cx_overload_reject``; the admin port still answers; closed, served."""
    async with aiohttp_upstream() as up:
        base = open_fds()
        maximum = base + 60
        value = (base + 30) / maximum
        action = threshold(REJECT_INCOMING_CONNECTIONS, FILE_DESCRIPTORS, value)
        async with overloaded_proxy(overload_doc(up, FILE_DESCRIPTORS, maximum, action)) as (proxy, watch):
            port = proxy.port()
            head, _ = await one_request(port)
            assert head.startswith(b"HTTP/1.1 200")
            pressure = time.monotonic()
            fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(40)]
            try:
                fire = await watch.until(lambda s: s.reject_fraction == 1.0, pressure)
                rejected = 0
                for _ in range(10):
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    try:
                        assert await asyncio.wait_for(reader.read(), BOUND) == b""
                    except ConnectionResetError:
                        pass  # closed before the request was read: a reset is a refusal too
                    writer.close()
                    rejected += 1
                await assert_ready(proxy)
                seen = await stats(proxy)
                assert seen["listener.http.downstream_cx_overload_reject"] == rejected
                assert seen[f"overload.{REJECT_INCOMING_CONNECTIONS}.active"] == 1
            finally:
                pressure = time.monotonic()
                for fd in fds:
                    os.close(fd)
            recover = await watch.until(lambda s: s.reject_fraction == 0.0, pressure)
            head, _ = await one_request(port)
            assert head.startswith(b"HTTP/1.1 200")
            seen = await stats(proxy)
            assert seen["listener.http.downstream_cx_overload_reject"] == rejected
            assert seen[f"overload.{REJECT_INCOMING_CONNECTIONS}.activations"] == 1
    figure(
        "descriptors",
        threshold=f"{value:.2f} of {maximum} fds",
        fire=f"{fire:.3f}s",
        recover=f"{recover:.3f}s",
        rejected=rejected,
    )


class LoopHog:
    """Real event-loop lag: a callback that blocks the loop for ``block`` seconds on every
    turn of the loop until stopped (other callbacks still run, between the blocks)."""

    def __init__(self, block: float) -> None:
        self.block = block
        self.running = False

    def start(self) -> None:
        self.running = True
        asyncio.get_running_loop().call_soon(self._turn)

    def _turn(self) -> None:
        if self.running:
            time.sleep(self.block)
            asyncio.get_running_loop().call_soon(self._turn)

    def stop(self) -> None:
        self.running = False


async def test_event_loop_lag_disables_keepalive_on_both_codecs_and_recovers() -> None:
    """event-loop lag x disable_http_keepalive: with every turn of the loop blocked for 0.1 s
    (twice max_lag), an HTTP/1.1 response says ``connection: close`` and the connection ends,
    an HTTP/2 request is answered and followed by a GOAWAY; each counted as
    ``downstream_cx_overload_disable_keepalive``. Unblocked, keep-alive is back."""
    async with aiohttp_upstream() as up:
        action = threshold(DISABLE_HTTP_KEEPALIVE, EVENT_LOOP_LAG, 1.0)
        async with overloaded_proxy(overload_doc(up, EVENT_LOOP_LAG, 0.05, action)) as (proxy, watch):
            port = proxy.port()
            hog = LoopHog(0.1)
            pressure = time.monotonic()
            hog.start()
            try:
                fire = await watch.until(lambda s: s.keepalive_close_fraction == 1.0, pressure)
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                head, _ = await exchange(reader, writer)
                assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
                assert await asyncio.wait_for(reader.read(), BOUND) == b""  # the proxy closed it
                writer.close()
                h2 = await RawH2.open(port)
                sid = h2.request("/")
                await h2.read_until(lambda events: h2.ended(sid) and h2.goaway() is not None, BOUND)
                assert h2.headers_of(sid).get(b":status") == b"200", h2.events
                goaway = h2.goaway()
                assert goaway is not None and goaway.error_code == 0 and goaway.last_stream_id == sid
                await h2.close()
                await assert_ready(proxy)
                seen = await stats(proxy)
                assert seen["http.http.downstream_cx_overload_disable_keepalive"] == 2
                assert seen[f"overload.{EVENT_LOOP_LAG}.pressure"] >= 100
            finally:
                pressure = time.monotonic()
                hog.stop()
            recover = await watch.until(lambda s: s.keepalive_close_fraction == 0.0, pressure)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(2):  # two requests on one connection: keep-alive again
                head, _ = await exchange(reader, writer)
                assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower()
            writer.close()
            seen = await stats(proxy)
            assert seen["http.http.downstream_cx_overload_disable_keepalive"] == 2
            assert seen[f"overload.{DISABLE_HTTP_KEEPALIVE}.activations"] == 1
    figure("lag", threshold="lag >= max_lag 0.05 s", fire=f"{fire:.3f}s", recover=f"{recover:.3f}s", closed=2)


async def test_connection_pressure_scales_idle_timeout_and_recovers() -> None:
    """downstream connections (scaled 0.25..0.75 of 20) x reduce_timeouts on the HCM's 60 s
    idle timeout (min_timeout 0.2 s): at 10 connections the action is at its scaled value,
    50% (the timer 30.1 s, so nothing closes); at 16 it saturates, the idle timer is 0.2 s and
    the proxy closes the idle connections itself, which takes the pressure away again."""
    async with aiohttp_upstream() as up:
        action = {
            "name": REDUCE_TIMEOUTS,
            "triggers": [
                {
                    "name": DOWNSTREAM_CONNECTIONS,
                    "scaled": {"scaling_threshold": 0.25, "saturation_threshold": 0.75},
                }
            ],
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.overload.v3.ScaleTimersOverloadActionConfig",
                "timer_scale_factors": [{"timer": "HTTP_DOWNSTREAM_CONNECTION_IDLE", "min_timeout": "0.2s"}],
            },
        }
        doc = overload_doc(
            up, DOWNSTREAM_CONNECTIONS, 20, action, common_http_protocol_options={"idle_timeout": "60s"}
        )
        async with overloaded_proxy(doc) as (proxy, watch):
            port = proxy.port()
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(10)]
            for reader, writer in held:  # each connection has served a request, and is idle
                head, _ = await exchange(reader, writer)
                assert head.startswith(b"HTTP/1.1 200")
            await watch.until(lambda s: s.timer_scale == 0.5)
            assert proxy.server.overload.state.scale_timeout(
                "HTTP_DOWNSTREAM_CONNECTION_IDLE", 60.0
            ) == pytest.approx(30.1)
            seen = await stats(proxy)
            assert seen[f"overload.{REDUCE_TIMEOUTS}.scale_percent"] == 50
            assert seen[f"overload.{REDUCE_TIMEOUTS}.active"] == 0
            assert seen[f"overload.{DOWNSTREAM_CONNECTIONS}.pressure"] == 50
            pressure = time.monotonic()
            more = [await asyncio.open_connection("127.0.0.1", port) for _ in range(6)]
            for reader, writer in more:
                await exchange(reader, writer)
            held += more
            fire = await watch.until(lambda s: s.timer_scale == 1.0, pressure)
            await assert_ready(proxy)
            seen = await stats(proxy)
            assert seen[f"overload.{REDUCE_TIMEOUTS}.active"] == 1
            # The proxy ends every idle connection: each read sees its close.
            for reader, _ in held:
                assert await asyncio.wait_for(reader.read(), BOUND) == b""
            closed = time.monotonic() - pressure
            recover = await watch.until(lambda s: s.timer_scale == 0.0, pressure)  # from the 16th
            assert proxy.server.overload.state.scale_timeout("HTTP_DOWNSTREAM_CONNECTION_IDLE", 60.0) == 60.0
            for _, writer in held:
                writer.close()
            head, _ = await one_request(port)
            assert head.startswith(b"HTTP/1.1 200")
            seen = await stats(proxy)
            assert seen[f"overload.{REDUCE_TIMEOUTS}.scale_percent"] == 0
            assert seen[f"overload.{REDUCE_TIMEOUTS}.activations"] == 1
            await assert_ready(proxy)
    figure(
        "connections",
        threshold="scaled 0.25..0.75 of 20",
        fire=f"{fire:.3f}s",
        idle_closed=f"{closed:.3f}s",
        recover=f"{recover:.3f}s",
        closed=16,
    )


async def test_reduce_timeouts_shortens_max_connection_duration_on_both_codecs() -> None:
    """reduce_timeouts on HTTP_DOWNSTREAM_CONNECTION_MAX (min_timeout 1 s), saturated by any
    one of four connections (so the pressure stays while either is open): the HCM's 60 s
    ``max_connection_duration`` becomes 1 s, so the HTTP/1.1 connection is closed and the
    HTTP/2 one drained with a GOAWAY, each counted as ``downstream_cx_max_duration_reached``."""
    async with aiohttp_upstream() as up:
        action = {
            **threshold(REDUCE_TIMEOUTS, DOWNSTREAM_CONNECTIONS, 0.25),
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.overload.v3.ScaleTimersOverloadActionConfig",
                "timer_scale_factors": [{"timer": "HTTP_DOWNSTREAM_CONNECTION_MAX", "min_timeout": "1s"}],
            },
        }
        options = {"max_connection_duration": "60s"}
        doc = overload_doc(up, DOWNSTREAM_CONNECTIONS, 4, action, common_http_protocol_options=options)
        async with overloaded_proxy(doc) as (proxy, watch):
            port = proxy.port()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head, _ = await exchange(reader, writer)
            assert head.startswith(b"HTTP/1.1 200")
            h2 = await RawH2.open(port)
            sid = h2.request("/")
            await h2.read_until(lambda events: h2.ended(sid), BOUND)
            assert h2.headers_of(sid).get(b":status") == b"200"
            await watch.until(lambda s: s.timer_scale == 1.0)
            assert await asyncio.wait_for(reader.read(), BOUND) == b""
            await h2.read_until(lambda events: h2.goaway() is not None, BOUND)
            goaway = h2.goaway()
            assert goaway is not None and goaway.error_code == 0
            writer.close()
            await h2.close()
            await watch.until(lambda s: s.timer_scale == 0.0)
            seen = await stats(proxy)
            assert seen["http.http.downstream_cx_max_duration_reached"] == 2
            head, _ = await one_request(port)
            assert head.startswith(b"HTTP/1.1 200")
            await assert_ready(proxy)
