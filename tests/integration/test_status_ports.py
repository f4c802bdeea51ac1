"""Istio's status ports (15021 ``/healthz/ready``, 15090 ``/stats/prometheus``) on a running
proxy: the admin's answers, on every interface, GET/HEAD only, bounded, and answering while the
data plane is overloaded or draining. The proxy runs in-process; the ports are bound as 0."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator

import pytest

from meshproxy.admin import endpoint
from meshproxy.admin.status import PROMETHEUS_PATH, READY_PATH, StatusPorts

from . import wire
from .harness import Proxy, bootstrap, cluster, eventually, free_port, http_listener, route, running_proxy
from .test_overload_wiring import overloaded_doc
from .test_xds_client import xds_bootstrap
from .upstreams import aiohttp_upstream

BOUND = 10.0


@contextlib.asynccontextmanager
async def status_ports(proxy: Proxy, ready: int = 0, prometheus: int = 0) -> AsyncIterator[StatusPorts]:
    ports = StatusPorts(proxy.server.admin, ready, prometheus)
    await ports.start()
    try:
        yield ports
    finally:
        ports.close()


async def ask(
    port: int, method: str = "GET", path: str = READY_PATH, host: str = "127.0.0.1"
) -> wire.Response:
    async with asyncio.timeout(BOUND):
        reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(wire.request(method, path, [("Connection", "close")]))
        if method == "HEAD":
            return await wire.read_head(reader)
        return await wire.read_response(reader)
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def plain_proxy() -> AsyncIterator[Proxy]:
    async with (
        aiohttp_upstream() as up,
        running_proxy(bootstrap([http_listener([route()])], [cluster("backend", up)])) as proxy,
    ):
        yield proxy


def families(text: bytes) -> list[bytes]:
    return re.findall(rb"^# TYPE (\S+)", text, re.MULTILINE)


async def test_each_port_gives_the_admins_answer_on_every_interface() -> None:
    async with plain_proxy() as proxy, status_ports(proxy) as ports:
        ready, prom = ports.port(READY_PATH), ports.port(PROMETHEUS_PATH)
        assert ready != prom
        for srv in ports.servers.values():
            assert srv.sockets[0].getsockname()[0] in ("::", "0.0.0.0")
        answer = await ask(ready)
        assert (answer.status, answer.body) == (200, b"LIVE\n")
        scrape = await ask(prom, path=PROMETHEUS_PATH)
        assert scrape.status == 200
        assert (scrape.get("content-type") or "").startswith("text/plain; version=")
        admin = await asyncio.to_thread(_admin_scrape, proxy)
        assert families(scrape.body) == families(admin) and len(families(admin)) > 10
        if socket.has_ipv6:
            assert (await ask(ready, host="::1")).status == 200  # the dual-stack socket
        # The admin stays where the bootstrap put it.
        assert proxy.server.admin.address() is not None
        assert proxy.server.admin.address()[0] == "127.0.0.1"  # type: ignore[index]


def _admin_scrape(proxy: Proxy) -> bytes:
    import urllib.request

    with urllib.request.urlopen(proxy.admin_url + "/stats/prometheus", timeout=5) as resp:
        return resp.read()  # type: ignore[no-any-return]


async def test_one_port_may_serve_both_paths() -> None:
    port = free_port()
    async with plain_proxy() as proxy, status_ports(proxy, port, port) as ports:
        assert ports.port(READY_PATH) == ports.port(PROMETHEUS_PATH) == port
        assert (await ask(port)).status == 200
        assert (await ask(port, path=PROMETHEUS_PATH)).status == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", READY_PATH, 405),
        ("PUT", READY_PATH, 405),
        ("DELETE", PROMETHEUS_PATH, 405),
        ("GET", "/ready", 404),
        ("GET", "/quitquitquit", 404),
        ("POST", "/quitquitquit", 404),
        ("GET", "/healthz/ready/x", 404),
    ],
)
async def test_only_get_and_head_of_the_ports_path(method: str, path: str, status: int) -> None:
    async with plain_proxy() as proxy, status_ports(proxy) as ports:
        port = ports.port(PROMETHEUS_PATH if path == PROMETHEUS_PATH else READY_PATH)
        answer = await ask(port, method, path)
        # RFC 9110 15.5.6: a 405 names the methods the path takes in Allow.
        assert (answer.status, answer.get("allow")) == (status, "GET, HEAD" if status == 405 else None)
        assert not proxy.server.draining


async def test_head_has_the_length_and_no_body() -> None:
    async with plain_proxy() as proxy, status_ports(proxy) as ports:
        port = ports.port(READY_PATH)
        async with wire.connect(port) as (reader, writer):
            writer.write(wire.request("HEAD", READY_PATH) + wire.request("GET", READY_PATH))
            head = await wire.read_head(reader)
            assert head.status == 200 and head.get("content-length") == "5"
            after = await wire.read_response(reader)  # the next bytes are the GET's answer
            assert (after.status, after.body) == (200, b"LIVE\n")


async def test_a_request_larger_than_the_bound_is_refused_and_closed() -> None:
    async with plain_proxy() as proxy, status_ports(proxy) as ports:
        big = wire.request("GET", READY_PATH, [("X-Pad", "a" * endpoint.MAX_REQUEST)])
        async with wire.connect(ports.port(READY_PATH)) as (reader, writer):
            writer.write(big)
            answer = await wire.read_response(reader)
            assert answer.status == 431
            assert await wire.read_eof(reader) == b""


async def test_a_client_that_never_completes_its_request_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoint, "REQUEST_TIMEOUT", 0.3)
    async with plain_proxy() as proxy, status_ports(proxy) as ports:
        async with wire.connect(ports.port(READY_PATH)) as (reader, writer):
            writer.write(b"GET /healthz/ready HTTP/1.1\r\nHost: x\r\n")  # no end of head
            assert await wire.read_eof(reader) == b""
        async with wire.connect(ports.port(READY_PATH)) as (reader, writer):  # idle keep-alive too
            writer.write(wire.request("GET", READY_PATH))
            assert (await wire.read_response(reader)).status == 200
            assert await wire.read_eof(reader) == b""


async def test_not_ready_until_a_first_configuration_arrives() -> None:
    doc = xds_bootstrap(free_port())  # an ADS server nobody runs
    async with running_proxy(doc) as proxy, status_ports(proxy) as ports:
        answer = await ask(ports.port(READY_PATH))
        assert (answer.status, answer.body) == (503, b"NOT READY\n")


async def test_draining_turns_readiness_off() -> None:
    async with plain_proxy() as proxy, status_ports(proxy) as ports:
        assert (await ask(ports.port(READY_PATH))).status == 200
        await proxy.server.drain(0.5)
        answer = await ask(ports.port(READY_PATH))
        assert (answer.status, answer.body) == (503, b"DRAINING\n")
        assert (await ask(ports.port(PROMETHEUS_PATH), path=PROMETHEUS_PATH)).status == 200


async def test_the_ports_answer_while_the_data_plane_is_overloaded() -> None:
    async with (
        aiohttp_upstream() as up,
        running_proxy(overloaded_doc(up, 10)) as proxy,
        status_ports(proxy) as ports,
    ):
        held = [await asyncio.open_connection("127.0.0.1", proxy.port()) for _ in range(5)]
        state = proxy.server.overload
        await eventually(lambda: not state.state.accepting, BOUND, "overload saturated")
        for _ in range(20):  # more connections than the data plane would take
            assert (await ask(ports.port(READY_PATH))).status == 200
            assert (await ask(ports.port(PROMETHEUS_PATH), path=PROMETHEUS_PATH)).status == 200
        assert not state.state.accepting
        for _, writer in held:
            writer.close()
