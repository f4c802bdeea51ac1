"""The overload manager wired into a running proxy: the bootstrap's ``overload_manager`` builds
the server's runtime, its state reaches every HTTP context, the global connection limit and the
actions on connections are carried out at accept, and the admin port answers throughout.

Load is real (connections held open); the manager refreshes every 50 ms and every wait is an
event or a bounded poll."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

from meshproxy.hcm.context import HttpContext
from meshproxy.overload.config import DOWNSTREAM_CONNECTIONS, STOP_ACCEPTING_CONNECTIONS

from .harness import Proxy, bootstrap, cluster, eventually, http_listener, route, running_proxy
from .upstreams import aiohttp_upstream

CONNECTIONS_TYPE = (
    "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
    "DownstreamConnectionsConfig"
)
STOP_REQUESTS = "envoy.overload_actions.stop_accepting_requests"
BOUND = 10.0


def overloaded_doc(up: int, max_connections: int) -> dict[str, Any]:
    doc = bootstrap([http_listener([route()])], [cluster("backend", up)])
    doc["overload_manager"] = {
        "refresh_interval": "0.05s",
        "resource_monitors": [
            {
                "name": DOWNSTREAM_CONNECTIONS,
                "typed_config": {
                    "@type": CONNECTIONS_TYPE,
                    "max_active_downstream_connections": max_connections,
                },
            }
        ],
        "actions": [
            {
                "name": STOP_ACCEPTING_CONNECTIONS,
                "triggers": [{"name": DOWNSTREAM_CONNECTIONS, "threshold": {"value": 0.5}}],
            },
            {
                "name": STOP_REQUESTS,
                "triggers": [{"name": DOWNSTREAM_CONNECTIONS, "threshold": {"value": 0.5}}],
            },
        ],
    }
    return doc


async def admin_get(proxy: Proxy, path: str) -> tuple[int, bytes]:
    def get() -> tuple[int, bytes]:
        with urllib.request.urlopen(proxy.admin_url + path, timeout=5) as resp:
            return resp.status, resp.read()

    return await asyncio.to_thread(get)


async def get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await asyncio.wait_for(reader.read(), BOUND)
    finally:
        writer.close()


async def test_stop_accepting_connections_parks_the_listener_and_recovers() -> None:
    """At 5 of 10 connections the action saturates: the listener stops accepting (a client
    that connects meanwhile waits in the backlog), every HTTP context sees the state, the
    admin port answers; when the held connections close, the waiting client is served."""
    async with aiohttp_upstream() as up, running_proxy(overloaded_doc(up, 10)) as proxy:
        port = proxy.port()
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        server = proxy.server
        await eventually(lambda: not server.overload.state.accepting, BOUND, "overload saturated")
        contexts = [c for c in server.listeners["http"].contexts.values() if isinstance(c, HttpContext)]
        assert contexts and all(c.overload is server.overload.state for c in contexts)
        waiting = asyncio.ensure_future(get(port))
        status, _ = await admin_get(proxy, "/ready")
        assert status == 200
        _, body = await admin_get(proxy, "/stats?format=flat")
        stats = json.loads(body)
        assert stats[f"overload.{STOP_ACCEPTING_CONNECTIONS}.active"] == 1
        assert stats[f"overload.{DOWNSTREAM_CONNECTIONS}.pressure"] == 50
        assert not waiting.done()
        for _, writer in held:
            writer.close()
        response = await asyncio.wait_for(waiting, BOUND)
        assert response.startswith(b"HTTP/1.1 200")
        assert server.overload.state.accepting
        assert server.overload.stats.action(STOP_ACCEPTING_CONNECTIONS).activations == 1


async def test_global_connection_limit_refuses_at_accept_and_counts() -> None:
    async with aiohttp_upstream() as up, running_proxy(overloaded_doc(up, 3)) as proxy:
        port = proxy.port()
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await eventually(lambda: proxy.server.overload.connections.active == 3, BOUND, "3 held")
        # Refused before the manager's next refresh could park the listener.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), BOUND) == b""
        writer.close()
        assert proxy.listener_stats().downstream_global_cx_overflow >= 1
        for _, w in held:
            w.close()
        await eventually(lambda: proxy.server.overload.connections.active == 0, BOUND, "slots back")
