"""The sidecar's shutdown order over real sockets, with the real command (``python -m meshproxy
run``): at SIGTERM readiness turns 503 and the inbound listener drains (in-flight requests
finish with ``connection: close``, new connections are refused; with a graceful inbound drain
they are first served in drain mode until callers leave) while the outbound listener
(``traffic_direction: OUTBOUND``) keeps accepting and serving the application; once the
application has gone quiet (or the termination drain duration ends, or a second signal comes)
the outbound listener drains too and the process exits 0. Every request is counted: none is
lost.

As in test_drain.py the test-side loop is pinned to uvloop: the loop under test is the child's.
"""

from __future__ import annotations

import asyncio
import pathlib
import signal
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest

from . import wire
from .h2_client import RawH2
from .harness import ProxyProcess, bootstrap, cluster, eventually, http_listener, proxy_process, route
from .test_drain import KeepAliveClient, refuses
from .upstreams import aiohttp_upstream

pytestmark = pytest.mark.asyncio(loop_factories=["uvloop"])

INBOUND_CLIENTS = 3
BOUND = 20.0


def two_way_doc(up: int) -> dict[str, Any]:
    inbound = http_listener([route()], name="inbound", drain_timeout="5s")
    inbound["traffic_direction"] = "INBOUND"
    outbound = http_listener([route()], name="outbound", drain_timeout="5s")
    outbound["traffic_direction"] = "OUTBOUND"
    return bootstrap([inbound, outbound], [cluster("backend", up)])


def readiness(proc: ProxyProcess) -> int:
    url = f"http://127.0.0.1:{proc.status['/healthz/ready']}/healthz/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


@dataclass
class App:
    """The application's outbound calls: keep-alive and fresh connections, until ``stop``."""

    port: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    ok: int = 0
    done_at: list[float] = field(default_factory=list)  # loop time of each success

    async def _call(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, close: bool) -> None:
        self.sent += 1
        writer.write(wire.request("GET", "/delay/0.02", [("Connection", "close")] if close else None))
        resp = await wire.read_response(reader)
        assert resp.status == 200, resp.head
        assert close or resp.get("connection") != "close", "the outbound listener drained while the app lived"
        self.ok += 1
        self.done_at.append(asyncio.get_running_loop().time())

    async def keep_alive(self) -> None:
        async with wire.connect(self.port) as (reader, writer):
            while not self.stop.is_set():
                await self._call(reader, writer, close=False)

    async def fresh(self) -> None:
        while not self.stop.is_set():
            async with wire.connect(self.port) as (reader, writer):
                await self._call(reader, writer, close=True)

    def after(self, moment: float) -> int:
        return sum(1 for t in self.done_at if t > moment)


async def test_sigterm_drains_inbound_while_outbound_serves_the_app_until_it_goes_quiet(
    tmp_path: pathlib.Path,
) -> None:
    loop = asyncio.get_running_loop()
    args = ("--ready-port", "0", "--drain-quiet", "0.5", "--termination-drain-duration", "30")
    async with aiohttp_upstream() as up:
        with proxy_process(two_way_doc(up), tmp_path, args=args) as proc:
            inbound, outbound = proc.port("inbound"), proc.port("outbound")
            assert readiness(proc) == 200
            clients = [KeepAliveClient(inbound, "/delay/0.2") for _ in range(INBOUND_CLIENTS)]
            inbound_tasks = [asyncio.create_task(c.run()) for c in clients]
            app = App(outbound)
            app_tasks = [asyncio.create_task(app.keep_alive()), asyncio.create_task(app.fresh())]
            await eventually(
                lambda: all(len(c.exchanges) >= 2 for c in clients) and app.ok >= 10, BOUND, "warm"
            )

            def inbound_mid_request() -> bool:
                now = loop.time()
                return all(c.sent_at is not None and now - c.sent_at < 0.08 for c in clients)

            await eventually(inbound_mid_request, BOUND, "every inbound client mid-request")
            proc.proc.send_signal(signal.SIGTERM)
            term_at = loop.time()

            await eventually(lambda: refuses(inbound), BOUND, "the inbound listener closed")
            inbound_done = await asyncio.gather(*inbound_tasks, return_exceptions=True)
            assert [d for d in inbound_done if d is not None] == [], "an inbound client saw a failure"
            assert await asyncio.to_thread(readiness, proc) == 503
            # The application lives on: its outbound calls, old and new connections, keep working.
            await eventually(lambda: app.after(term_at) >= 30, BOUND, "outbound calls after SIGTERM")
            assert not refuses(outbound)
            assert proc.proc.poll() is None
            app.stop.set()  # the application exits: its connections close
            app_done = await asyncio.gather(*app_tasks, return_exceptions=True)
            assert [d for d in app_done if d is not None] == [], "an outbound call failed"
            await eventually(lambda: proc.proc.poll() is not None, BOUND, "exit")
            assert proc.proc.returncode == 0

    assert app.sent == app.ok, f"{app.sent - app.ok} outbound request(s) lost"
    for c in clients:
        *before, last = c.exchanges
        assert all(status == 200 for _, _, status, _ in c.exchanges)
        # The request in flight at the signal finished (sent just before it, 0.2 s long); the
        # drain's connection: close came on it or, if the child took the signal late, the next.
        assert any(sent < term_at < done for sent, done, _, _ in c.exchanges)
        assert last[3] and last[1] > term_at, "the drained response must say connection: close"
        assert not any(close for *_, close in before)
    log = "".join(proc.log)
    assert "outbound hold ended after" in log
    assert "no traffic for the quiet period" in log


async def test_a_busy_outbound_listener_drains_when_the_termination_drain_duration_ends(
    tmp_path: pathlib.Path,
) -> None:
    """The application keeps a keep-alive connection open (it never goes quiet): the hold ends at
    the termination drain duration, and the request in flight then finishes with close."""
    args = ("--ready-port", "0", "--drain-quiet", "0.2", "--termination-drain-duration", "1")
    async with aiohttp_upstream() as up:
        with proxy_process(two_way_doc(up), tmp_path, args=args) as proc:
            async with wire.connect(proc.port("outbound")) as (reader, writer):
                writer.write(wire.request("GET", "/delay/0.01"))
                assert (await wire.read_response(reader)).status == 200
                proc.proc.send_signal(signal.SIGTERM)
                await eventually(lambda: refuses(proc.port("inbound")), BOUND, "inbound closed")
                slow = KeepAliveClient(proc.port("outbound"), "/delay/0.3")
                await slow.run(rounds=100)  # until the drain answers with close
                assert all(status == 200 for _, _, status, _ in slow.exchanges)
            await eventually(lambda: proc.proc.poll() is not None, BOUND, "exit")
            assert proc.proc.returncode == 0
    assert "the termination drain duration ended" in "".join(proc.log)


async def test_a_second_signal_ends_the_outbound_hold(tmp_path: pathlib.Path) -> None:
    args = ("--ready-port", "0", "--termination-drain-duration", "600")
    async with aiohttp_upstream() as up:
        with proxy_process(two_way_doc(up), tmp_path, args=args) as proc:
            async with wire.connect(proc.port("outbound")) as (reader, writer):  # held: never quiet
                proc.proc.send_signal(signal.SIGTERM)
                await eventually(lambda: refuses(proc.port("inbound")), BOUND, "inbound closed")
                writer.write(wire.request("GET", "/delay/0.01"))
                resp = await wire.read_response(reader)
                assert resp.status == 200 and resp.get("connection") != "close"
                proc.proc.send_signal(signal.SIGINT)
                assert await wire.read_eof(reader) == b""  # the idle connection is closed by the drain
            await eventually(lambda: proc.proc.poll() is not None, BOUND, "exit")
            assert proc.proc.returncode == 0
    assert "outbound hold ended after" in "".join(proc.log)
    assert "a second signal" in "".join(proc.log)


@dataclass
class Callers:
    """Callers of the inbound listener still routed to this pod: a new connection for every
    request (each drain-mode response closes its connection), until ``stop``."""

    port: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    ok: int = 0
    closed_by_drain: int = 0

    async def run(self) -> None:
        while not self.stop.is_set():
            async with wire.connect(self.port) as (reader, writer):
                self.sent += 1
                writer.write(wire.request("GET", "/delay/0.01"))
                resp = await wire.read_response(reader)
                assert resp.status == 200, resp.head
                self.ok += 1
                self.closed_by_drain += resp.get("connection") == "close"


async def test_a_graceful_inbound_drain_serves_new_callers_in_drain_mode_until_they_leave(
    tmp_path: pathlib.Path,
) -> None:
    """``--graceful-inbound-drain`` (implied by ``--sidecar``), Envoy's graceful drain under Istio:
    after SIGTERM callers not yet routed elsewhere still connect and are served, every response
    closing its connection (HTTP/2: GOAWAY after the response); once they have gone for the quiet
    period the listener stops accepting and the process exits 0. No request is lost."""
    args = ("--ready-port", "0", "--graceful-inbound-drain", "--drain-quiet", "0.5")
    args += ("--termination-drain-duration", "30")
    async with aiohttp_upstream() as up:
        with proxy_process(two_way_doc(up), tmp_path, args=args) as proc:
            inbound = proc.port("inbound")
            callers = Callers(inbound)
            tasks = [asyncio.create_task(callers.run()) for _ in range(2)]
            await eventually(lambda: callers.ok >= 10, BOUND, "callers served")
            proc.proc.send_signal(signal.SIGTERM)
            await eventually(lambda: callers.closed_by_drain >= 20, BOUND, "new callers served after SIGTERM")
            assert not refuses(inbound)
            assert await asyncio.to_thread(readiness, proc) == 503
            h2 = await RawH2.open(inbound)  # a new HTTP/2 caller: served, then told to go
            sid = h2.request("/delay/0.01")
            await h2.flush()
            events = await h2.read_until(lambda evs: h2.ended(sid) and h2.goaway() is not None)
            assert h2.headers_of(sid).get(b":status") == b"200", events
            goaway = h2.goaway()
            assert goaway is not None and goaway.last_stream_id == sid
            await h2.close()
            callers.stop.set()  # the callers' routes have moved
            done = await asyncio.gather(*tasks, return_exceptions=True)
            assert [d for d in done if d is not None] == [], "a caller saw a failure"
            await eventually(lambda: refuses(inbound), BOUND, "the inbound listener closed once quiet")
            await eventually(lambda: proc.proc.poll() is not None, BOUND, "exit")
            assert proc.proc.returncode == 0
    assert callers.sent == callers.ok, f"{callers.sent - callers.ok} inbound request(s) lost"
    assert "inbound hold ended after" in "".join(proc.log)
