"""gRPC across two sidecars over post-quantum mutual TLS (X25519MLKEM768), HTTP/2 end to end.

grpcio client ─h2c─▶ sidecar A (outbound) ══ TLS 1.3, ALPN h2, mTLS ══▶ sidecar B (inbound)
─h2c─▶ grpc.aio server. Covers the four call kinds (bidi with 10,000 messages), status codes
with trailing metadata, deadlines and cancellation, and the evidence: ALPN h2 and the hybrid
group on the inbound side, one multiplexed mesh connection, the caller's SPIFFE ID in XFCC.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from certs import make_ca, make_leaf

from .grpc_upstream import Echo, Stubs, grpc_server, stubs
from .harness import Proxy, running_proxy
from .test_mesh_mtls import CLIENT_ID, SERVER_ID, inbound, outbound

H2 = {"http2_protocol_options": {}}


def _h2_mesh(doc_in: dict[str, Any], doc_out: dict[str, Any]) -> None:
    """Turn the HTTP/1.1 mesh bootstraps into HTTP/2 ones: ALPN h2 on the mesh hop, h2 clusters."""
    listener = doc_in["static_resources"]["listeners"][0]
    tls = listener["filter_chains"][0]["transport_socket"]["typed_config"]
    tls["common_tls_context"]["alpn_protocols"] = ["h2", "http/1.1"]
    for c in doc_in["static_resources"]["clusters"]:
        c.update(H2)
    for c in doc_out["static_resources"]["clusters"]:
        c.update(H2)
        c["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"] = ["h2"]


@contextlib.asynccontextmanager
async def grpc_mesh(tmp_path: pathlib.Path) -> AsyncIterator[tuple[Stubs, Echo, Proxy, Proxy]]:
    server = make_leaf(make_ca(), SERVER_ID)
    client = make_leaf(make_ca(), CLIENT_ID)
    async with grpc_server() as (port, echo):
        doc_in = inbound(port, server)
        probe = outbound(0, client, tmp_path / "a.log")
        _h2_mesh(doc_in, probe)
        async with running_proxy(doc_in) as b:
            doc_out = outbound(b.port("inbound"), client, tmp_path / "a.log")
            _h2_mesh(doc_in, doc_out)
            async with running_proxy(doc_out) as a, stubs(a.port("outbound")) as s:
                yield s, echo, a, b


async def test_grpc_calls_cross_the_pq_mesh(tmp_path: pathlib.Path) -> None:
    async with grpc_mesh(tmp_path) as (s, echo, a, b):
        call = s.unary(b"ping")
        assert await call == b"ping"
        assert ("x-echo-len", "4") in tuple(await call.trailing_metadata())
        replies = [m async for m in s.server_stream(b"200")]
        assert replies == [b"%d" % i for i in range(200)]

        async def messages() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b"y" * 100

        assert await s.client_stream(messages()) == b"100/10000"
        assert await asyncio.gather(*(s.unary(b"%d" % i) for i in range(20))) == [
            b"%d" % i for i in range(20)
        ]
        groups = b.server.store.listener_stats("inbound").ssl_handshakes_by_group
        assert groups == {"X25519MLKEM768": 1}, "every call multiplexed on one mTLS connection"
        assert a.cluster_stats("mesh").upstream_cx_http2_total == 1
        assert b.http_stats("inbound").downstream_cx_http2_total == 1
        assert echo.calls == 21


async def test_bidi_ten_thousand_messages_across_the_mesh(tmp_path: pathlib.Path) -> None:
    n = 10_000
    async with grpc_mesh(tmp_path) as (s, _echo, _a, _b):
        call = s.bidi()
        received = 0
        for i in range(n):
            await call.write(b"m%d" % i)
            if i % 100 == 99:
                for _ in range(100):
                    assert await call.read() == b"m%d" % received
                    received += 1
        await call.done_writing()
        assert received == n
        assert await call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("code", ["NOT_FOUND", "UNAVAILABLE", "FAILED_PRECONDITION"])
async def test_status_and_trailing_metadata_cross_the_mesh(tmp_path: pathlib.Path, code: str) -> None:
    async with grpc_mesh(tmp_path) as (s, _echo, _a, _b):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.unary(b"x", metadata=(("x-status", code),))
        assert info.value.code() == grpc.StatusCode[code]
        assert ("x-detail", "trailing-" + code) in tuple(info.value.trailing_metadata())


async def test_deadline_and_cancellation_cross_the_mesh(tmp_path: pathlib.Path) -> None:
    async with grpc_mesh(tmp_path) as (s, echo, _a, b):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.slow(b"x", timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(echo.cancelled.wait(), 5)
        assert b.http_stats("inbound").http2_rx_reset >= 1
        assert await s.unary(b"still") == b"still"


async def test_httpx_http2_client_through_the_mesh(tmp_path: pathlib.Path) -> None:
    async with grpc_mesh(tmp_path) as (_s, _echo, a, _b):
        # Prior-knowledge h2c (http1=False): httpx's HTTP/2 client against the plaintext side.
        transport = httpx.AsyncHTTPTransport(http2=True, http1=False)
        async with httpx.AsyncClient(transport=transport) as h2c:
            r = await h2c.post(
                f"http://127.0.0.1:{a.port('outbound')}/test.Echo/Unary",
                content=b"\x00\x00\x00\x00\x03abc",
                headers={"content-type": "application/grpc", "te": "trailers"},
            )
        assert r.http_version == "HTTP/2"
        assert r.status_code == 200
        assert r.content == b"\x00\x00\x00\x00\x03abc"
