"""A dual-stack listener (``socket_address.ipv4_compat`` on ``::``), over real loopback sockets.

One socket takes IPv4 and IPv6 clients; an IPv4 client, which the kernel presents as
``::ffff:127.0.0.1``, matches IPv4 ``prefix_ranges`` and is logged as IPv4 (as Envoy reports
it); without ``ipv4_compat`` an IPv6 listener is IPv6 only, whatever the kernel's default.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .harness import FILE_LOG, HCM, ROUTER, addr, bootstrap, read_access_log, running_proxy

TIMEOUT = 10.0


def answering(body: str, prefix: str, length: int) -> dict[str, Any]:
    """A chain for destinations in ``prefix``/``length`` answering ``body``."""
    manager = {
        "@type": HCM,
        "stat_prefix": body,
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 200, "body": {"inline_string": body}},
                        }
                    ],
                }
            ]
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    return {
        "name": body,
        "filter_chain_match": {"prefix_ranges": [{"address_prefix": prefix, "prefix_len": length}]},
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}],
    }


def dual_stack(ipv4_compat: bool, log: str) -> dict[str, Any]:
    address = addr("::", 0)
    address["socket_address"]["ipv4_compat"] = ipv4_compat
    chains = [answering("v4", "127.0.0.0", 8), answering("v6", "::1", 128)]
    logger = {"name": "envoy.access_loggers.file", "typed_config": {"@type": FILE_LOG, "path": log}}
    for chain in chains:
        chain["filters"][0]["typed_config"]["access_log"] = [logger]
    return bootstrap([{"name": "dual", "address": address, "filter_chains": chains}], [])


async def get(host: str, port: int) -> bytes:
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
        return answer


async def test_one_socket_takes_both_families_and_ipv4_matches_ipv4_ranges(tmp_path: Any) -> None:
    log = str(tmp_path / "access.log")
    async with running_proxy(dual_stack(True, log)) as proxy:
        port = proxy.port("dual")
        assert proxy.server.listener_address("dual")[0] == "::"
        v4, v6 = await get("127.0.0.1", port), await get("::1", port)
        assert v4.startswith(b"HTTP/1.1 200") and v4.endswith(b"\r\n\r\nv4")
        assert v6.startswith(b"HTTP/1.1 200") and v6.endswith(b"\r\n\r\nv6")
        assert proxy.listener_stats("dual").downstream_cx_total == 2
    records = read_access_log(log)
    # IPv6 addresses bracketed, as Envoy writes them ([::1]:port)
    assert [r["downstream_local_address"] for r in records] == [f"127.0.0.1:{port}", f"[::1]:{port}"]
    assert records[0]["downstream_remote_address"].startswith("127.0.0.1:")
    assert records[1]["downstream_remote_address"].startswith("[::1]:")


async def test_without_ipv4_compat_an_ipv6_listener_refuses_ipv4(tmp_path: Any) -> None:
    async with running_proxy(dual_stack(False, str(tmp_path / "access.log"))) as proxy:
        port = proxy.port("dual")
        assert (await get("::1", port)).endswith(b"v6")
        with pytest.raises(ConnectionRefusedError):
            await get("127.0.0.1", port)
