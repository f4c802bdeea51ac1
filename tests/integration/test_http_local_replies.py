"""Replies the proxy makes itself, and the JSON access log that records every request.

Covers no route (404 NR), no healthy upstream (empty cluster and all endpoints unhealthy:
503 UH), connection refused (503 UF), route timeout (504 UT), an upstream that resets
before its response (503 UC) or cuts one short (the client sees the truncation; UC), a
malformed upstream response (502 UPE), and the access-log fields of a forwarded request.
The log is flushed at close, so it is read after ``running_proxy`` exits.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import pathlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from . import wire
from .harness import (
    Proxy,
    bootstrap,
    cluster,
    eventually,
    free_port,
    http_listener,
    read_access_log,
    route,
    running_proxy,
)
from .upstreams import aiohttp_upstream, raw_upstream, read_request

START_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def _truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b"t" * 10)
    await writer.drain()
    writer.close()


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.close()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Takes the request and never answers (until the proxy gives up and closes)."""
    await read_request(reader)
    await reader.read()
    writer.close()


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"this is not HTTP\r\n\r\n")
    await writer.drain()


def _unhealthy(name: str, port: int) -> dict[str, Any]:
    # Panic mode off: with it (Envoy's default 50%), a cluster with no healthy host routes to all.
    c = cluster(name, port, common_lb_config={"healthy_panic_threshold": {"value": 0}})
    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["health_status"] = "UNHEALTHY"
    return c


@contextlib.asynccontextmanager
async def _failing_proxy(log: pathlib.Path) -> AsyncIterator[tuple[Proxy, int]]:
    """A proxy whose routes each end in one kind of failure; yields it and the good upstream."""
    async with (
        aiohttp_upstream() as up,
        raw_upstream(_truncate) as trunc,
        raw_upstream(_reset) as reset,
        raw_upstream(_garbage) as garbage,
        raw_upstream(_silent) as silent,
    ):
        routes = [
            route("/empty", "empty"),
            route("/sick", "sick"),
            route("/refused", "refused"),
            route("/slow", "silent", timeout="0.2s"),
            route("/trunc", "trunc"),
            route("/reset", "reset"),
            route("/garbage", "garbage"),
            route("/echo", "backend"),
        ]
        clusters = [
            cluster("backend", up),
            cluster("empty"),
            _unhealthy("sick", up),
            cluster("refused", free_port()),
            cluster("trunc", trunc),
            cluster("reset", reset),
            cluster("garbage", garbage),
            cluster("silent", silent),
        ]
        async with running_proxy(bootstrap([http_listener(routes, access_log=str(log))], clusters)) as proxy:
            yield proxy, up


async def _settled(proxy: Proxy) -> None:
    """Every active-request gauge is back at zero: no exchange leaked its accounting."""
    names = ("backend", "empty", "sick", "refused", "trunc", "reset", "garbage", "silent")
    await eventually(
        lambda: (
            proxy.http_stats().downstream_rq_active == 0
            and all(proxy.cluster_stats(n).upstream_rq_active == 0 for n in names)
        ),
        what="active request gauges back at 0",
    )


async def test_local_replies_carry_response_flags(tmp_path: pathlib.Path) -> None:
    expected = {
        "/nope": (404, "NR"),
        "/empty": (503, "UH"),
        "/sick": (503, "UH"),
        "/refused": (503, "UF"),
        "/slow": (504, "UT"),
        "/reset": (503, "UC"),
        "/garbage": (502, "UPE"),
    }
    log = tmp_path / "access.log"
    async with _failing_proxy(log) as (proxy, _):
        got = {
            path: (await wire.exchange(proxy.port(), wire.request("GET", path)))[0].status
            for path in expected
        }
        assert proxy.http_stats().no_route == 1
        assert proxy.cluster_stats("refused").upstream_cx_connect_fail == 1
        assert proxy.cluster_stats("silent").upstream_rq_timeout == 1
        await _settled(proxy)
    assert got == {path: status for path, (status, _) in expected.items()}
    records = {r["path"]: r for r in read_access_log(log)}
    assert {p: (r["response_code"], r["response_flags"]) for p, r in records.items()} == expected
    assert 150 <= records["/slow"]["duration_ms"] < 2000, "the route timeout is 0.2 s"
    assert records["/nope"]["upstream_host"] is None
    assert records["/refused"]["upstream_host"].startswith("127.0.0.1:")


async def test_response_cut_short_is_truncated_for_the_client(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "access.log"
    async with _failing_proxy(log) as (proxy, _), wire.connect(proxy.port()) as (reader, writer):
        writer.write(wire.request("GET", "/trunc"))
        head = await wire.read_head(reader)
        body = await wire.read_eof(reader)
        await _settled(proxy)
    assert (head.status, head.get("content-length")) == (200, "1000")
    assert body == b"t" * 10, "the client must see the connection end before the declared length"
    (record,) = read_access_log(log)
    assert (record["response_code"], record["response_flags"], record["bytes_sent"]) == (200, "UC", 10)


async def test_access_log_fields_of_a_forwarded_request(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "access.log"
    before = time.time()
    async with _failing_proxy(log) as (proxy, up):
        raw = wire.request(
            "POST",
            "/echo/log?x=1",
            [("X-Request-Id", "rid-1"), ("User-Agent", "t/1")],
            b"12345",
            host="svc.local",
        )
        (resp,) = await wire.exchange(proxy.port(), raw)
        (generated,) = await wire.exchange(proxy.port(), wire.request("GET", "/echo/gen"))
    after = time.time()
    first, second = read_access_log(log)
    assert resp.status == 200
    assert START_TIME.match(first["start_time"]), first["start_time"]
    start = calendar.timegm(time.strptime(first["start_time"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert before - 1 <= start <= after
    assert {k: first[k] for k in ("method", "path", "authority", "response_code", "response_flags")} == {
        "method": "POST",
        "path": "/echo/log?x=1",
        "authority": "svc.local",
        "response_code": 200,
        "response_flags": "-",
    }
    assert first["upstream_host"] == f"127.0.0.1:{up}"
    assert first["bytes_received"] == 5
    assert first["bytes_sent"] == len(resp.body)
    assert first["request_id"] == "rid-1"
    assert first["user_agent"] == "t/1"
    assert 0 < first["duration_ms"] < 5000
    assert generated.status == 200
    assert re.fullmatch(r"[0-9a-f-]{36}", second["request_id"] or ""), "a generated id is logged too"


async def test_connection_stays_open_after_local_replies(tmp_path: pathlib.Path) -> None:
    # Envoy answers a complete request locally without closing the connection; a bodiless
    # GET is complete when its head is, so nothing here justifies "connection: close".
    expected = [("/slow", 504), ("/refused", 503), ("/nope", 404), ("/empty", 503), ("/echo/last", 200)]
    got = []
    async with (
        _failing_proxy(tmp_path / "access.log") as (proxy, _),
        wire.connect(proxy.port()) as (reader, writer),
    ):
        for path, _ in expected:
            writer.write(wire.request("GET", path))
            resp = await wire.read_response(reader)
            got.append((path, resp.status, resp.get("connection")))
            if resp.get("connection") == "close":
                break
    assert got == [(path, status, None) for path, status in expected]


async def test_long_route_timeout_is_kept_by_the_deadline_tick() -> None:
    # Timeouts of a second or more are not event-loop timers but entries in the listener's
    # deadline set, checked every DEADLINE_TICK: the 504 must still come, and not much late.
    async with raw_upstream(_silent) as silent:
        doc = bootstrap([http_listener([route("/", "silent", timeout="1s")])], [cluster("silent", silent)])
        async with running_proxy(doc) as proxy:
            started = time.monotonic()
            (resp,) = await wire.exchange(proxy.port(), wire.request("GET", "/"))
            elapsed = time.monotonic() - started
            assert resp.status == 504
            assert 1.0 <= elapsed < 2.0, elapsed  # fired, and by the tick rather than never
            assert proxy.server.listeners["http"].deadlines == set()
            assert proxy.cluster_stats("silent").upstream_rq_timeout == 1
