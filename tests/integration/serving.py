"""One proxy in front of an echoing aiohttp upstream, with an httpx client of a chosen codec:
the setup the HTTP filter tests (test_http_filters_*.py, test_http_local_reply_config.py) share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .harness import Proxy, bootstrap, cluster, running_proxy
from .upstreams import aiohttp_upstream


def client(codec: str) -> httpx.AsyncClient:
    """httpx over HTTP/1.1, or over HTTP/2 with prior knowledge."""
    return httpx.AsyncClient(http1=codec == "HTTP/1.1", http2=codec == "HTTP/2", timeout=10)


@contextlib.asynccontextmanager
async def serving(
    listener: dict[str, Any], codec: str = "HTTP/1.1"
) -> AsyncIterator[tuple[Proxy, httpx.AsyncClient]]:
    """``listener`` routing to cluster "backend", an aiohttp echo server; and a client."""
    async with (
        aiohttp_upstream() as port, running_proxy(bootstrap([listener], [cluster("backend", port)])) as proxy,
        client(codec) as c,
    ):
        yield proxy, c
