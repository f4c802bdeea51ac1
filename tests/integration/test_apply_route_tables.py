"""Server.apply builds a changed listener's route table in steps (``RouteTable.build``,
yielding to the event loop between slices) and the listener then routes by that table: a
large table applied, then replaced, each answering on the listener's socket."""

from __future__ import annotations

import json
from typing import Any

from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.config.model import Config

from .harness import bootstrap, http_listener, running_proxy
from .wire import exchange, request

ROUTES = 300


def tagged(tag: str) -> list[dict[str, Any]]:
    """ROUTES routes, each answering with its own body: which route matched is visible."""
    return [
        {
            "match": {"prefix": f"/r{i}/"},
            "direct_response": {"status": 200, "body": {"inline_string": f"{tag}{i}"}},
        }
        for i in range(ROUTES)
    ]


def config(tag: str) -> Config:
    doc = bootstrap([http_listener(tagged(tag))], [], admin=False)
    return parse_bootstrap(json.dumps(doc), source="test")


async def bodies(port: int, *paths: str) -> list[tuple[int, bytes]]:
    data = b"".join(request(target=p) for p in paths)
    return [(r.status, r.body) for r in await exchange(port, data, count=len(paths))]


async def test_applied_tables_route_and_a_replacement_takes_over() -> None:
    async with running_proxy(bootstrap([http_listener([])], [], admin=False)) as proxy:
        assert await bodies(proxy.port(), "/r1/") == [(404, b"")]
        await proxy.server.apply(config("a"))
        first = await bodies(proxy.port(), "/r0/", "/r150/x", f"/r{ROUTES - 1}/", "/none")
        assert first == [(200, b"a0"), (200, b"a150"), (200, f"a{ROUTES - 1}".encode()), (404, b"")]
        await proxy.server.apply(config("b"))
        assert await bodies(proxy.port(), "/r7/", "/r299/") == [(200, b"b7"), (200, b"b299")]
