"""``original_dst`` on connections nothing redirected: None, from plain and transport sockets.

The redirected case needs a REDIRECT rule in a network namespace (root): see
tests/e2e/test_interception.py, where a uvloop transport's socket recovers it.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from meshproxy.addresses import address_of
from meshproxy.listener.original_dst import original_dst


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_a_direct_connection_has_no_original_destination(family: int, host: str) -> None:
    with socket.socket(family) as server:
        server.bind((host, 0))
        server.listen()
        with socket.create_connection(server.getsockname()[:2], timeout=5):
            accepted, _ = server.accept()
            with accepted:
                assert original_dst(accepted) is None


async def test_a_transport_socket_is_accepted_too() -> None:
    seen: asyncio.Future[tuple[str, int] | None] = asyncio.get_running_loop().create_future()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.set_result(original_dst(writer.get_extra_info("socket")))
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    async with server:
        _, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        assert await asyncio.wait_for(seen, 5) is None
        writer.close()


def test_an_ipv4_client_of_a_dual_stack_socket_is_seen_as_ipv4() -> None:
    """The accepted socket is IPv6 and its names are ``::ffff:127.0.0.1``: the connection's
    addresses are reported as IPv4, and its (IPv4) conntrack entry is asked without error."""
    with socket.socket(socket.AF_INET6) as server:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        server.bind(("::", 0))
        server.listen()
        with socket.create_connection(("127.0.0.1", server.getsockname()[1]), timeout=5) as client:
            accepted, peer = server.accept()
            with accepted:
                assert accepted.family == socket.AF_INET6 and peer[0] == "::ffff:127.0.0.1"
                assert address_of(peer) == client.getsockname()
                assert address_of(accepted.getsockname()) == ("127.0.0.1", server.getsockname()[1])
                assert original_dst(accepted) is None


def test_address_of_keeps_ipv6_and_nothing_as_they_are() -> None:
    assert address_of(("fd00::1", 80, 0, 0)) == ("fd00::1", 80)
    assert address_of(None) == ("", 0)
