"""Protocol detection end to end: one listener, tls_inspector + http_inspector, four filter chains.

The listener "edge" picks its filter chain from the first bytes of each connection, as Envoy's
listener filters do: a TLS ClientHello goes to the chain matching ``transport_protocol: tls``
(which terminates TLS with a DownstreamTlsContext and serves HTTP/2 or HTTP/1.1 by ALPN), the
HTTP/2 preface to the ``h2c`` chain, an HTTP/1.x request line to the ``http/1.1`` chain, and
anything else to an opaque tcp_proxy chain (``transport_protocol: raw_buffer`` with no
application protocols, or the ``default_filter_chain``) relaying to an echo upstream. The
plaintext HTTP chains name ``raw_buffer`` too: as in Envoy, the transport protocol narrows the
chains before the application protocols do. Each HTTP chain answers with a direct response
naming itself, so a reply proves which chain served it. Real clients throughout: httpx over
HTTP/1.1, httpx with prior-knowledge h2c, httpx over TLS with ALPN h2 (Python's ssl), and raw
sockets. A client that sends nothing, or too little to classify, is closed after
``listener_filters_timeout`` and counted in ``downstream_listener_filter_timeout``.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from certs import make_ca, make_leaf

from .harness import TCP, Proxy, addr, bootstrap, cluster, eventually, http_listener, running_proxy
from .upstreams import tcp_echo_upstream

DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
LISTENER_FILTER = "type.googleapis.com/envoy.extensions.filters.listener.{0}.v3.{1}"
SERVER_ID = "spiffe://cluster.local/ns/default/sa/edge"
TIMEOUT = "0.4s"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _http_chain(name: str, match: dict[str, Any]) -> dict[str, Any]:
    """A filter chain whose HCM answers every request with "<name> chain"."""
    routes = [
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": f"{name} chain"}},
        }
    ]
    chain: dict[str, Any] = http_listener(routes, name=name)["filter_chains"][0]
    chain["filter_chain_match"] = match
    return chain


def _tcp_chain() -> dict[str, Any]:
    proxy = {"@type": TCP, "stat_prefix": "opaque", "cluster": "echo"}
    return {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}]}


def edge_listener(leaf: Any, *, opaque_as_default: bool) -> dict[str, Any]:
    tls_chain = _http_chain("tls", {"transport_protocol": "tls"})
    tls_chain["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_3"},
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"inline_bytes": _b64(leaf.cert_pem)},
                        "private_key": {"inline_bytes": _b64(leaf.key_pem)},
                    }
                ],
            },
        },
    }
    chains = [
        tls_chain,
        _http_chain("h2c", {"transport_protocol": "raw_buffer", "application_protocols": ["h2c"]}),
        _http_chain(
            "http1", {"transport_protocol": "raw_buffer", "application_protocols": ["http/1.1", "http/1.0"]}
        ),
    ]
    listener: dict[str, Any] = {
        "name": "edge",
        "address": addr("127.0.0.1", 0),
        "listener_filters": [
            {
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {"@type": LISTENER_FILTER.format("tls_inspector", "TlsInspector")},
            },
            {
                "name": "envoy.filters.listener.http_inspector",
                "typed_config": {"@type": LISTENER_FILTER.format("http_inspector", "HttpInspector")},
            },
        ],
        "listener_filters_timeout": TIMEOUT,
        "filter_chains": chains,
    }
    if opaque_as_default:
        listener["default_filter_chain"] = _tcp_chain()
    else:
        chains.append({**_tcp_chain(), "filter_chain_match": {"transport_protocol": "raw_buffer"}})
    return listener


@asynccontextmanager
async def edge(opaque_as_default: bool = False) -> AsyncIterator[tuple[Proxy, Any]]:
    leaf = make_leaf(make_ca(), SERVER_ID)
    async with tcp_echo_upstream(farewell=b"bye\n") as echo_port:
        doc = bootstrap(
            [edge_listener(leaf, opaque_as_default=opaque_as_default)], [cluster("echo", echo_port)]
        )
        async with running_proxy(doc) as proxy:
            yield proxy, leaf


def _client_tls(leaf: Any, alpn: list[str]) -> ssl.SSLContext:
    """Python's ssl trusting the test CA; the SVID has a URI SAN only, so no host name check."""
    ctx = ssl.create_default_context(cadata=leaf.ca.cert_pem.decode())
    ctx.check_hostname = False
    ctx.set_alpn_protocols(alpn)
    return ctx


async def _opaque_round_trip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
        writer.write_eof()
        rest = await asyncio.wait_for(reader.read(), 5)  # bounded by the proxy's close after "bye"
        return echoed + rest
    finally:
        writer.close()


@pytest.mark.parametrize("opaque_as_default", [False, True], ids=["raw-chain", "default-chain"])
async def test_each_protocol_reaches_its_chain(opaque_as_default: bool) -> None:
    async with edge(opaque_as_default) as (proxy, leaf):
        port = proxy.port("edge")
        url = f"http://127.0.0.1:{port}/"
        async with httpx.AsyncClient() as h1:
            r = await h1.get(url)
        assert (r.http_version, r.text) == ("HTTP/1.1", "http1 chain")

        h2c = httpx.AsyncHTTPTransport(http2=True, http1=False)  # prior knowledge
        async with httpx.AsyncClient(transport=h2c) as client:
            r = await client.get(url)
        assert (r.http_version, r.text) == ("HTTP/2", "h2c chain")

        https = f"https://127.0.0.1:{port}/"
        async with httpx.AsyncClient(http2=True, verify=_client_tls(leaf, ["h2", "http/1.1"])) as client:
            r = await client.get(https)
        assert (r.http_version, r.text) == ("HTTP/2", "tls chain")
        async with httpx.AsyncClient(verify=_client_tls(leaf, ["http/1.1"])) as client:
            r = await client.get(https)
        assert (r.http_version, r.text) == ("HTTP/1.1", "tls chain")

        # Opaque bytes that start like nothing the inspectors know go to the tcp_proxy chain.
        assert await _opaque_round_trip(port, b"\x00\x01opaque payload\n") == b"\x00\x01opaque payload\nbye\n"
        # A word that is no HTTP method, then a line: not HTTP/1.x either.
        assert await _opaque_round_trip(port, b"hello there\n") == b"hello there\nbye\n"

        assert proxy.http_stats("http1").downstream_rq_total == 1
        assert proxy.http_stats("h2c").downstream_cx_http2_total == 1
        assert proxy.http_stats("tls").downstream_rq_total == 2
        stats = proxy.listener_stats("edge")
        assert stats.ssl_handshake == 2
        assert stats.no_filter_chain_match == 0
        assert stats.downstream_listener_filter_timeout == 0


async def test_a_silent_client_is_closed_after_the_detection_timeout() -> None:
    async with edge() as (proxy, _leaf):
        port = proxy.port("edge")
        silent = await asyncio.open_connection("127.0.0.1", port)
        # Two bytes of "GET " are not enough to classify: it waits, then times out the same way.
        partial = await asyncio.open_connection("127.0.0.1", port)
        partial[1].write(b"GE")
        for reader, writer in (silent, partial):
            try:
                assert await asyncio.wait_for(reader.read(), 5) == b"", "closed without a byte"
            finally:
                writer.close()
        stats = proxy.listener_stats("edge")
        await eventually(lambda: stats.downstream_listener_filter_timeout == 2, what="two timeouts counted")
        assert proxy.http_stats("http1").downstream_rq_total == 0
        # The listener is still serving after the timeouts.
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/")
        assert r.text == "http1 chain"
