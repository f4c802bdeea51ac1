"""Request smuggling, attacked the way an attacker would: raw bytes from one client, a victim
sharing the pooled upstream connection, and an upstream that parses what it is sent leniently.

The contract for every shape: the upstream never receives a request the proxy did not account
for (every request it parses carries the ``x-forwarded-for`` and a distinct ``x-request-id`` that
the proxy adds to each request it forwards; a request hidden in the attacker's bytes, always
``GET /SMUGGLED`` without them, never does), and a victim that asks for ``/victim`` on the same
pooled connection afterwards gets its own answer.
The proxy may refuse a shape (4xx/501 and a close) or forward it with its own framing; both
keep the contract. The cluster allows one upstream connection, so attacker and victim share it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from . import wire
from .harness import Proxy, bootstrap, cluster, http_listener, route, running_proxy
from .test_bad_input import open_raw, read_until_close

SMUGGLED = b"GET /SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n"
QUIET = 0.3  # seconds of silence that mean "the proxy waits for more of the attacker's request"


# ------------------------------------------------------------------ a lenient upstream


@dataclass
class Seen:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    connection: int


@dataclass
class LenientUpstream:
    """An origin that parses requests as a naive backend does: bare LF accepted, the first
    Content-Length wins over Transfer-Encoding, any ``chunked`` token means chunked, no
    framing means no body. It answers every request with its target as the body."""

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                request = await _read_request(reader, conn)
                if request is None:
                    break
                self.seen.append(request)
                body = request.target
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader, conn: int) -> Seen | None:
    line = await reader.readline()
    while line in (b"\r\n", b"\n"):
        line = await reader.readline()
    if not line:
        return None
    parts = line.strip().split(b" ")
    method, target = parts[0], parts[1] if len(parts) > 1 else b""
    headers: list[tuple[bytes, bytes]] = []
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    lengths = [v for n, v in headers if n == b"content-length"]
    coding = b",".join(v for n, v in headers if n == b"transfer-encoding").lower()
    body = b""
    if lengths:
        body = await reader.readexactly(int(lengths[0]))
    elif b"chunked" in coding:
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += await reader.readexactly(size)
            await reader.readline()
    return Seen(method, target, headers, body, conn)


@contextlib.asynccontextmanager
async def lenient_upstream() -> AsyncIterator[LenientUpstream]:
    up = LenientUpstream()
    server = await asyncio.start_server(up.handle, "127.0.0.1", 0)
    up.port = server.sockets[0].getsockname()[1]
    try:
        yield up
    finally:
        server.close()


@contextlib.asynccontextmanager
async def shared_pool(up: LenientUpstream, **hcm: object) -> AsyncIterator[Proxy]:
    one_connection = {"circuit_breakers": {"thresholds": [{"max_connections": 1}]}}
    doc = bootstrap(
        [http_listener([route()], **hcm)],
        [cluster("backend", up.port, **one_connection)],
    )
    async with running_proxy(doc) as proxy:
        yield proxy


# ------------------------------------------------------------------ shapes


def h(*lines: str, body: bytes = b"") -> bytes:
    return "".join(line + "\r\n" for line in lines).encode("latin-1") + b"\r\n" + body


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


P, G, HOST = "POST / HTTP/1.1", "GET / HTTP/1.1", "Host: a"
CL_S = f"Content-Length: {len(SMUGGLED)}"
SHAPES: list[tuple[str, bytes]] = [
    # Hop-by-hop abuse: framing named in Connection (issue 12 finding 1).
    ("connection-content-length", h(P, HOST, CL_S, "Connection: content-length", body=SMUGGLED)),
    ("connection-close-content-length", h(P, HOST, CL_S, "Connection: close, content-length", body=SMUGGLED)),
    ("connection-CONTENT-LENGTH", h(P, HOST, CL_S, "Connection: Content-Length", body=SMUGGLED)),
    ("connection-keepalive-cl", h(P, HOST, CL_S, "Connection: keep-alive,content-length", body=SMUGGLED)),
    ("connection-transfer-encoding", h(P, HOST, "Transfer-Encoding: chunked",
                                       "Connection: transfer-encoding", body=chunked(SMUGGLED))),
    ("connection-host", h(P, HOST, CL_S, "Connection: host", body=SMUGGLED)),
    ("connection-two-headers", h(P, HOST, CL_S, "Connection: keep-alive", "Connection: content-length",
                                 body=SMUGGLED)),
    ("proxy-connection-cl", h(P, HOST, CL_S, "Proxy-Connection: content-length", body=SMUGGLED)),
    ("connection-te-trailers-cl", h(P, HOST, CL_S, "TE: trailers", "Connection: te, content-length",
                                    body=SMUGGLED)),
    # CL / TE conflicts and obfuscated Transfer-Encoding.
    ("cl-and-te", h(P, HOST, "Content-Length: 4", "Transfer-Encoding: chunked", body=chunked(SMUGGLED))),
    ("te-and-cl", h(P, HOST, "Transfer-Encoding: chunked", "Content-Length: 4", body=chunked(SMUGGLED))),
    ("te-twice", h(P, HOST, "Transfer-Encoding: chunked", "Transfer-Encoding: chunked",
                   body=chunked(SMUGGLED))),
    ("te-xchunked", h(P, HOST, "Transfer-Encoding: xchunked", CL_S, body=SMUGGLED)),
    ("te-space-before-colon", h(P, HOST, "Transfer-Encoding : chunked", body=chunked(SMUGGLED))),
    ("te-chunked-identity", h(P, HOST, "Transfer-Encoding: chunked, identity", body=chunked(SMUGGLED))),
    ("te-identity-chunked-cl", h(P, HOST, "Transfer-Encoding: identity, chunked", "Content-Length: 3",
                                 body=chunked(SMUGGLED))),
    ("te-tab", h(P, HOST, "Transfer-Encoding:\tchunked", body=chunked(SMUGGLED))),
    ("te-vtab", h(P, HOST, "Transfer-Encoding: \x0bchunked", body=chunked(SMUGGLED))),
    ("te-obs-fold", h(P, HOST, "Transfer-Encoding:", " chunked", body=chunked(SMUGGLED))),
    ("te-quoted", h(P, HOST, 'Transfer-Encoding: "chunked"', body=chunked(SMUGGLED))),
    ("te-gzip-second-line", h(P, HOST, "Transfer-Encoding: chunked", "Transfer-Encoding: gzip",
                              body=chunked(SMUGGLED))),
    ("te-CHUNKED-upper", h(P, HOST, "Transfer-Encoding: CHUNKED", body=chunked(SMUGGLED))),
    ("te-http10", h("POST / HTTP/1.0", HOST, "Transfer-Encoding: chunked", body=chunked(SMUGGLED))),
    # Content-Length tricks.
    ("cl-duplicate-different", h(P, HOST, "Content-Length: 0", CL_S, body=SMUGGLED)),
    ("cl-duplicate-same", h(P, HOST, CL_S, CL_S, body=SMUGGLED)),
    ("cl-list", h(P, HOST, f"Content-Length: 0, {len(SMUGGLED)}", body=SMUGGLED)),
    ("cl-plus", h(P, HOST, f"Content-Length: +{len(SMUGGLED)}", body=SMUGGLED)),
    ("cl-negative", h(P, HOST, "Content-Length: -1", body=SMUGGLED)),
    ("cl-hex", h(P, HOST, "Content-Length: 0x10", body=SMUGGLED)),
    ("cl-space-inside", h(P, HOST, "Content-Length: 1 0", body=SMUGGLED)),
    ("cl-exponent", h(P, HOST, "Content-Length: 1e1", body=SMUGGLED)),
    ("cl-huge", h(P, HOST, "Content-Length: 99999999999999999999999", body=SMUGGLED)),
    ("cl-leading-zeros", h(P, HOST, f"Content-Length: 000{len(SMUGGLED)}", body=SMUGGLED)),
    ("cl-space-before-colon", h(P, HOST, f"Content-Length : {len(SMUGGLED)}", body=SMUGGLED)),
    ("cl-underscore-name", h(P, HOST, f"Content_Length: {len(SMUGGLED)}", body=SMUGGLED)),
    ("cl-zero-then-body", h(P, HOST, "Content-Length: 0", body=SMUGGLED)),
    ("get-with-cl-body", h(G, HOST, CL_S, body=SMUGGLED)),
    ("cl-short-body-pipelined", h(P, HOST, "Content-Length: 5", body=b"hello" + SMUGGLED)),
    # Chunk-size tricks.
    ("chunk-extension", h(P, HOST, "Transfer-Encoding: chunked",
                          body=b"%x;ext=1\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED))),
    ("chunk-extension-long", h(P, HOST, "Transfer-Encoding: chunked",
                               body=b"1;" + b"a" * 20000 + b"\r\nx\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk-size-space", h(P, HOST, "Transfer-Encoding: chunked",
                           body=b"%x \r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED))),
    ("chunk-size-0x", h(P, HOST, "Transfer-Encoding: chunked", body=b"0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk-size-negative", h(P, HOST, "Transfer-Encoding: chunked", body=b"-5\r\nhello\r\n0\r\n\r\n")),
    ("chunk-size-overflow", h(P, HOST, "Transfer-Encoding: chunked",
                              body=b"ffffffffffffffffff1\r\nx\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk-data-too-long", h(P, HOST, "Transfer-Encoding: chunked",
                              body=b"1\r\nxx\r\n0\r\n\r\n" + SMUGGLED)),
    ("chunk-bare-lf", h(P, HOST, "Transfer-Encoding: chunked", body=b"5\nhello\n0\n\n" + SMUGGLED)),
    ("chunk-last-bare-lf", h(P, HOST, "Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\n\n" + SMUGGLED)),
    ("chunk-trailer-cl", h(P, HOST, "Transfer-Encoding: chunked",
                           body=b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n" + SMUGGLED)),
    ("chunk-trailer-te", h(P, HOST, "Transfer-Encoding: chunked",
                           body=b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n")),
    ("chunk-body-holds-request", h(P, HOST, "Transfer-Encoding: chunked", body=chunked(SMUGGLED))),
    # Line endings, NUL and control bytes.
    ("bare-lf-head", b"POST / HTTP/1.1\nHost: a\n" + f"{CL_S}\n\n".encode() + SMUGGLED),
    ("bare-cr-in-header", h(P, HOST, "X-A: a\rContent-Length: 0", CL_S, body=SMUGGLED)),
    ("nul-in-value", h(P, HOST, "X-A: a\x00b", CL_S, body=SMUGGLED)),
    ("nul-in-name", h(P, HOST, "X-\x00A: b", CL_S, body=SMUGGLED)),
    ("ctl-in-target", h("POST /a\x01b HTTP/1.1", HOST, CL_S, body=SMUGGLED)),
    ("obs-fold-other-header", h(P, HOST, "X-A: a", " folded", CL_S, body=SMUGGLED)),
    ("space-in-header-name", h(P, HOST, f"Content Length: {len(SMUGGLED)}", body=SMUGGLED)),
    ("header-without-colon", h(P, HOST, "Content-Length", CL_S, body=SMUGGLED)),
    # Request lines.
    ("double-space-request-line", h("GET  / HTTP/1.1", HOST) + SMUGGLED),
    ("http2-version-line", h("GET / HTTP/2.0", HOST) + SMUGGLED),
    ("http09-line", b"GET /\r\n\r\n" + SMUGGLED),
    ("extra-token-request-line", h("GET / HTTP/1.1 x", HOST) + SMUGGLED),
    ("absolute-form", h("GET http://other/ HTTP/1.1", HOST, CL_S, body=SMUGGLED)),
    ("absolute-form-userinfo", h("GET http://u@other/ HTTP/1.1", HOST, CL_S, body=SMUGGLED)),
    ("two-hosts", h(P, "Host: a", "Host: b", CL_S, body=SMUGGLED)),
    ("host-with-space", h(P, "Host: a b", CL_S, body=SMUGGLED)),
    ("host-with-slash-at", h(P, "Host: a/b@c", CL_S, body=SMUGGLED)),
    ("fragment-in-target", h("POST /x#frag HTTP/1.1", HOST, CL_S, body=SMUGGLED)),
    # Pipelines hidden in bodies and after them.
    ("pipeline-after-get", h(G, HOST) + SMUGGLED),
    ("pipeline-after-post", h(P, HOST, "Content-Length: 3", body=b"abc") + SMUGGLED),
    ("expect-continue-body", h(P, HOST, CL_S, "Expect: 100-continue", body=SMUGGLED)),
    # Upgrade tricks (issue 12 finding 2).
    ("h2c-upgrade-settings-not-in-connection", h(G, HOST, "Upgrade: h2c", "Connection: Upgrade",
                                                "HTTP2-Settings: AAMAAABkAAQAAP__") + SMUGGLED),
    ("h2c-upgrade-proper", h(G, HOST, "Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings",
                             "HTTP2-Settings: AAMAAABkAAQAAP__") + SMUGGLED),
    ("websocket-upgrade-refused-by-upstream", h(G, HOST, "Upgrade: websocket", "Connection: Upgrade",
                                                "Sec-WebSocket-Version: 13",
                                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==") + SMUGGLED),
    ("connection-upgrade-without-upgrade", h(P, HOST, CL_S, "Connection: upgrade", body=SMUGGLED)),
    ("upgrade-with-cl-body", h(P, HOST, CL_S, "Upgrade: websocket", "Connection: Upgrade", body=SMUGGLED)),
]  # fmt: skip


@pytest.mark.parametrize(("raw",), [pytest.param(raw, id=name) for name, raw in SHAPES])
async def test_no_request_the_proxy_did_not_account_for(raw: bytes) -> None:
    async with lenient_upstream() as up, shared_pool(up) as proxy:
        sock = await open_raw(proxy.port())
        try:
            await asyncio.get_running_loop().sock_sendall(sock, raw)
            received, _ = await read_until_close(sock, quiet=QUIET)
        finally:
            sock.close()
        del received  # refused or answered: either keeps the contract, which is upstream-side
        [victim] = await wire.exchange(proxy.port(), wire.request("GET", "/victim"))
        assert (victim.status, victim.body) == (200, b"/victim"), (victim.status, victim.body[:200])
        # Every request the proxy forwards carries the x-forwarded-for and x-request-id it adds; a
        # request parsed out of bytes the proxy relayed as something else carries neither.
        unaccounted = [s.target for s in up.seen if _header(s, b"x-forwarded-for") is None]
        assert not unaccounted, f"the upstream parsed requests the proxy never sent: {unaccounted}"
        ids = [_header(s, b"x-request-id") for s in up.seen]
        assert len(set(ids)) == len(ids), ids
        assert len(up.seen) <= proxy.cluster_stats().upstream_rq_total


def _header(seen: Seen, name: bytes) -> bytes | None:
    return next((v for n, v in seen.headers if n == name), None)


async def test_the_suite_holds_sixty_shapes() -> None:
    assert len(SHAPES) >= 60
    assert len({name for name, _ in SHAPES}) == len(SHAPES)


# ------------------------------------------------------------------ the response direction


@contextlib.asynccontextmanager
async def raw_upstream(response: bytes) -> AsyncIterator[int]:
    """An upstream that answers every request head with ``response`` verbatim."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while await _read_request(reader, 0) is not None:
                writer.write(response)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.mark.parametrize(
    "connection",
    ["content-length", "close, content-length", "Content-Length", "transfer-encoding"],
)
async def test_response_framing_is_not_removable_through_connection(connection: str) -> None:
    # An upstream response that names its own framing header in Connection must still reach the
    # client framed: the client reads exactly this body, and its next response is its own.
    body = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nEVIL!"
    response = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: %b\r\n\r\n%b" % (
        len(body),
        connection.encode(),
        body,
    )
    async with raw_upstream(response) as port:
        doc = bootstrap([http_listener([route()])], [cluster("backend", port)])
        async with running_proxy(doc) as proxy, wire.connect(proxy.port()) as (reader, writer):
            writer.write(wire.request("GET", "/one"))
            first = await asyncio.wait_for(wire.read_response(reader), 5)
            assert first.body == body
            if first.get("connection") == "close":
                assert await asyncio.wait_for(wire.read_eof(reader), 5) == b""
                return
            writer.write(wire.request("GET", "/two"))
            second = await asyncio.wait_for(wire.read_response(reader), 5)
            assert (second.status, second.body) == (200, body)


async def test_a_pipelined_upgrade_s_early_data_stays_with_the_upgrade() -> None:
    """Found by the http1_request fuzzer: ``GET /x``, an Upgrade request, then ``GET /admin`` in
    one write. The bytes after the upgrade head went to the active request's (``/x``'s) pooled
    upstream connection raw, so the upstream parsed ``/admin`` as a request the proxy never sent."""
    raw = (
        h("GET /x HTTP/1.1", "Host: t")
        + h("GET /ws HTTP/1.1", "Host: t", "Upgrade: websocket", "Connection: Upgrade")
        + h("GET /admin HTTP/1.1", "Host: t")
    )
    websocket = [{"upgrade_type": "websocket"}]
    async with lenient_upstream() as up, shared_pool(up, upgrade_configs=websocket) as proxy:
        sock = await open_raw(proxy.port())
        try:
            await asyncio.get_running_loop().sock_sendall(sock, raw)
            received, _ = await read_until_close(sock, quiet=QUIET)
        finally:
            sock.close()
        assert received.startswith(b"HTTP/1.1 200 OK"), received[:100]  # /x was answered
        [victim] = await wire.exchange(proxy.port(), wire.request("GET", "/victim"))
        assert (victim.status, victim.body) == (200, b"/victim")
        targets = [s.target for s in up.seen]
        assert b"/admin" not in targets, targets
        assert all(_header(s, b"x-forwarded-for") is not None for s in up.seen), targets
