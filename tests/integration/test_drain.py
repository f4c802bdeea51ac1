"""Graceful drain: stop accepting, finish what is in flight, close keep-alive connections, exit.

The SIGTERM test runs the real command (``python -m meshproxy run``) with keep-alive clients
looping against a slow upstream; the admin ``/drain_listeners`` tests use the in-process server.
The subprocess test pins the test-side loop to uvloop: the loop under test is the child's (the
CLI always picks uvloop), and running the same child twice would only double the runtime.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import socket
import urllib.request
from dataclasses import dataclass, field

import httpx
import pytest

from . import wire
from .harness import (
    bootstrap,
    cluster,
    eventually,
    http_listener,
    proxy_process,
    proxy_to,
    route,
    running_proxy,
)
from .upstreams import aiohttp_upstream

DRAIN_TIMEOUT = 5.0
CLIENTS = 4


def refuses(port: int) -> bool:
    """True once nothing accepts on ``port`` (a loopback connect answers at once either way)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@dataclass
class KeepAliveClient:
    """One connection sending ``path`` in a bounded loop until a response says ``close``."""

    port: int
    path: str
    sent_at: float | None = None  # the request on the wire right now, if any
    exchanges: list[tuple[float, float, int, bool]] = field(default_factory=list)  # sent, done, status, close

    async def run(self, rounds: int = 50) -> None:
        loop = asyncio.get_running_loop()
        async with wire.connect(self.port) as (reader, writer):
            for _ in range(rounds):
                self.sent_at = sent = loop.time()
                writer.write(wire.request("GET", self.path))
                resp = await wire.read_response(reader)
                self.sent_at = None
                close = resp.get("connection") == "close"
                self.exchanges.append((sent, loop.time(), resp.status, close))
                if close:
                    assert await wire.read_eof(reader) == b"", "bytes after a connection: close response"
                    return
        raise AssertionError(f"{rounds} requests and the proxy never drained")


def admin_stats(admin_port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/stats?format=flat", timeout=2) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_sigterm_drains_without_failed_requests(tmp_path: pathlib.Path) -> None:
    loop = asyncio.get_running_loop()
    async with aiohttp_upstream() as up:
        doc = bootstrap(
            [http_listener([route()], drain_timeout=f"{DRAIN_TIMEOUT}s")], [cluster("backend", up)]
        )
        with proxy_process(doc, tmp_path) as proc:
            port = proc.port("http")
            clients = [KeepAliveClient(port, "/delay/0.2") for _ in range(CLIENTS)]
            slow = KeepAliveClient(port, "/delay/1.5")  # keeps the process up while we probe
            tasks = [asyncio.create_task(c.run()) for c in clients]
            await eventually(lambda: all(len(c.exchanges) >= 2 for c in clients), what="warm keep-alive")
            slow_task = asyncio.create_task(slow.run())

            def all_mid_request() -> bool:
                # Every request has reached the proxy and has well over 100 ms left to run, so
                # the signal lands while each connection has a request in flight.
                now = loop.time()
                if not all(c.sent_at is not None and now - c.sent_at < 0.08 for c in clients):
                    return False
                active = admin_stats(proc.admin_port)["http.http.downstream_rq_active"]
                return active == CLIENTS + 1

            await eventually(all_mid_request, what="every client mid-request")
            proc.proc.send_signal(signal.SIGTERM)
            term_at = loop.time()

            await eventually(lambda: refuses(port), what="the listener closed")
            assert proc.proc.poll() is None, "the process exited before its in-flight requests finished"

            done = await asyncio.gather(*tasks, slow_task, return_exceptions=True)
            assert [d for d in done if d is not None] == [], "a client saw a failure"
            await eventually(lambda: proc.proc.poll() is not None, timeout=DRAIN_TIMEOUT + 2, what="exit")
            assert proc.proc.returncode == 0
            assert loop.time() - term_at < DRAIN_TIMEOUT

    for c in [*clients, slow]:
        *before, last = c.exchanges
        assert all(status == 200 for _, _, status, _ in c.exchanges)
        assert last[0] < term_at < last[1] and last[3], "the drained response must say connection: close"
        assert not any(close for *_, close in before)
    assert all(len(c.exchanges) >= 3 for c in clients)


async def test_admin_drain_listeners_finishes_in_flight_request() -> None:
    async with aiohttp_upstream() as up, proxy_to(up) as proxy, httpx.AsyncClient() as admin:
        port = proxy.port()
        async with wire.connect(port) as (reader, writer):
            writer.write(wire.request("GET", "/delay/0.4"))
            await eventually(lambda: proxy.http_stats().downstream_rq_active == 1, what="request in flight")
            assert (await admin.get(proxy.admin_url + "/ready")).status_code == 200

            posted = await admin.post(proxy.admin_url + "/drain_listeners")
            assert posted.status_code == 200
            await eventually(lambda: refuses(port), what="the listener stopped accepting")
            ready = await admin.get(proxy.admin_url + "/ready")
            assert ready.status_code == 503

            resp = await wire.read_response(reader)
            assert resp.status == 200 and resp.body == b"late\n"
            assert resp.get("connection") == "close"
            assert await wire.read_eof(reader) == b""
        assert proxy.server.store.server["draining"] == 1
        listeners = (await admin.get(proxy.admin_url + "/listeners")).json()
        assert [entry["draining"] for entry in listeners] == [True]


async def test_request_already_sent_on_an_idle_connection_survives_drain() -> None:
    """A keep-alive connection is idle, its client sends the next request, and the drain begins
    before the proxy has read it: the request was sent before the drain, so it must be served
    (with ``connection: close``), not reset."""
    async with (
        aiohttp_upstream() as up,
        proxy_to(up) as proxy,
        wire.connect(proxy.port()) as (reader, writer),
    ):
        writer.write(wire.request("GET", "/echo/1"))
        assert (await wire.read_response(reader)).status == 200
        writer.write(wire.request("GET", "/echo/2"))  # in the proxy's socket buffer from here on
        # The listener's drain, scheduled now, runs before the loop polls that socket again.
        drain = asyncio.ensure_future(proxy.server.listeners["http"].drain(DRAIN_TIMEOUT))
        try:
            resp = await wire.read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            pytest.fail(f"the request sent before the drain was dropped: {exc!r}")
        finally:
            await drain
        assert resp.status == 200
        assert resp.get("connection") == "close"


async def test_admin_drain_listeners_inboundonly_leaves_outbound_listeners_serving() -> None:
    """Envoy's ``/drain_listeners?inboundonly``: listeners whose traffic_direction is not
    OUTBOUND (unspecified counts as inbound) drain; the OUTBOUND one keeps accepting."""
    async with aiohttp_upstream() as up:
        listeners = [http_listener([route()], name=name) for name in ("in", "unspecified", "out")]
        listeners[0]["traffic_direction"] = "INBOUND"
        listeners[2]["traffic_direction"] = "OUTBOUND"
        async with (
            running_proxy(bootstrap(listeners, [cluster("backend", up)])) as proxy,
            httpx.AsyncClient() as admin,
        ):
            posted = await admin.post(proxy.admin_url + "/drain_listeners?inboundonly")
            assert posted.status_code == 200
            await eventually(
                lambda: refuses(proxy.port("in")) and refuses(proxy.port("unspecified")), what="inbound"
            )
            resp = await wire.exchange(proxy.port("out"), wire.request("GET", "/echo/1"))
            assert resp[0].status == 200 and resp[0].get("connection") != "close"
            assert (await admin.get(proxy.admin_url + "/ready")).status_code == 503
            drained = {
                e["name"]: e["draining"] for e in (await admin.get(proxy.admin_url + "/listeners")).json()
            }
            assert drained == {"in": True, "unspecified": True, "out": False}


async def test_shutdown_after_an_inboundonly_drain_still_holds_the_outbound_listener() -> None:
    """Istio's agent posts ``/drain_listeners?inboundonly`` before it signals the proxy: the
    shutdown that follows must still let the outbound listener serve until it goes quiet."""
    async with aiohttp_upstream() as up:
        listeners = [http_listener([route()], name=name) for name in ("in", "out")]
        listeners[1]["traffic_direction"] = "OUTBOUND"
        async with (
            running_proxy(bootstrap(listeners, [cluster("backend", up)])) as proxy,
            httpx.AsyncClient() as admin,
        ):
            server = proxy.server
            assert (await admin.post(proxy.admin_url + "/drain_listeners?inboundonly")).status_code == 200
            await eventually(lambda: refuses(proxy.port("in")), what="inbound drained")
            async with wire.connect(proxy.port("out")) as (reader, writer):  # the app, still busy
                server.terminate()
                for n in range(3):
                    writer.write(wire.request("GET", f"/echo/{n}"))
                    resp = await wire.read_response(reader)
                    assert resp.status == 200 and resp.get("connection") != "close"
                assert not server.stopped.is_set()
            # The application's connection closed: quiet for 1 s (the default), then the end.
            await asyncio.wait_for(server.stopped.wait(), 10)
