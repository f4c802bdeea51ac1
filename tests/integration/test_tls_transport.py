"""TlsProtocol on real loopback sockets (both loops): data, flow control, refusals, interop.

Covers an echo of 10 MiB each way (checksummed), a slow reader that must hold the writer back
(bounded buffers on both sides), plaintext sent to a TLS port, refusals seen from both ends,
the listener's hand-over (``accept_tls`` then ``set_protocol``), session resumption, and the
interpreter's own ``ssl`` module as an independent peer. That ``ssl`` links OpenSSL 3.0 here,
which has no ML-KEM: against it a ``preferred`` policy falls back to X25519, and a ``required``
one refuses it, which is the classical-only peer of issue 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sans import san_matchers
from unit.tls.tls_fixtures import Leaf, Pki, spiffe_id

from meshproxy.tls import (
    OFF,
    PREFERRED,
    Negotiated,
    TlsContext,
    TlsError,
    TlsProtocol,
    accept_tls,
    connect_tls,
)

from .harness import eventually

TIMEOUT = 20.0
MIB = 1024 * 1024
STDLIB_HAS_MLKEM = ssl.OPENSSL_VERSION_INFO >= (3, 5)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="module")
def leaves(pki: Pki) -> dict[str, Leaf]:
    return {"server": pki.leaf("server"), "client": pki.leaf("client")}


def contexts(pki: Pki, leaves: dict[str, Leaf], **fields: Any) -> tuple[TlsContext, TlsContext]:
    """Server and client contexts of a mesh link; ``server_x``/``client_x`` override field ``x``."""
    side = {"server": {}, "client": {}}  # type: dict[str, dict[str, Any]]
    for key, value in fields.items():
        role, name = key.split("_", 1)
        side[role][name] = value
    return (
        TlsContext(pki.config(leaves["server"], server_side=True, **side["server"])),
        TlsContext(pki.config(leaves.get("client"), server_side=False, **side["client"])),
    )


class Observed:
    """How the server's handshakes ended."""

    def __init__(self) -> None:
        self.negotiated: list[Negotiated] = []
        self.errors: list[TlsError] = []

    def __call__(self, negotiated: Negotiated | None, error: TlsError | None) -> None:
        if negotiated is not None:
            self.negotiated.append(negotiated)
        if error is not None:
            self.errors.append(error)


@contextlib.asynccontextmanager
async def tls_server(tls: TlsContext, handler: Handler, seen: Observed | None = None) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()

    def accept() -> TlsProtocol:
        inner = asyncio.StreamReaderProtocol(asyncio.StreamReader(), handler)  # type: ignore[arg-type]
        return TlsProtocol(tls.engine(), inner, on_handshake=seen)

    server = await loop.create_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def open_tls(port: int, tls: TlsContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    async with asyncio.timeout(TIMEOUT):
        transport, proto = await connect_tls(
            loop, "127.0.0.1", port, tls, lambda: asyncio.StreamReaderProtocol(reader)
        )
    return reader, asyncio.StreamWriter(transport, proto, reader, loop)  # type: ignore[arg-type]


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(256 * 1024):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_ten_mib_echoed_both_ways(pki: Pki, leaves: dict[str, Leaf]) -> None:
    server, client = contexts(pki, leaves)
    blocks = [random.Random(i).randbytes(MIB) for i in range(10)]
    async with tls_server(server, echo) as port:
        reader, writer = await open_tls(port, client)
        negotiated = writer.get_extra_info("tls")
        assert negotiated.group == "X25519MLKEM768" and negotiated.peer_uris == (spiffe_id("server"),)
        assert writer.get_extra_info("peername")[1] == port
        assert writer.get_extra_info("sockname")[0] == "127.0.0.1"

        async def send() -> None:
            for block in blocks:
                writer.write(block)
                await writer.drain()
            writer.write_eof()  # close_notify: the server's reader sees the end of the stream
            with pytest.raises(RuntimeError):
                writer.write(b"after the end")

        async with asyncio.timeout(TIMEOUT):
            _, echoed = await asyncio.gather(send(), reader.read())
        assert len(echoed) == 10 * MIB
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(b"".join(blocks)).digest()
        writer.close()


class Firehose(asyncio.Protocol):
    """Server side: writes ``total`` bytes as fast as flow control lets it, tracking its buffer."""

    def __init__(self, total: int) -> None:
        self.total, self.sent = total, 0
        self.paused = False
        self.pauses = 0
        self.max_buffered = 0
        self.block = random.Random(3).randbytes(256 * 1024)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=512 * 1024)
        self.resume_writing()

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_writing(self) -> None:
        self.paused = False
        while not self.paused and self.sent < self.total:
            self.transport.write(self.block)
            self.sent += len(self.block)
            self.max_buffered = max(self.max_buffered, self.transport.get_write_buffer_size())
        if self.sent >= self.total:
            self.transport.close()


class Sipper(asyncio.Protocol):
    """Client side: starts paused; hashes what it is given."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.received = 0
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.hash.update(data)
        self.received += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set_result(exc)


async def test_slow_reader_holds_the_writer_back(pki: Pki, leaves: dict[str, Leaf]) -> None:
    server, client = contexts(pki, leaves)
    total = 10 * MIB
    hose = Firehose(total)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: TlsProtocol(server.engine(), hose), "127.0.0.1", 0)
    try:
        transport, sipper = await connect_tls(
            loop, "127.0.0.1", srv.sockets[0].getsockname()[1], client, Sipper
        )
        await eventually(lambda: hose.paused, TIMEOUT, "the writer being paused")
        assert isinstance(sipper, Sipper) and sipper.received == 0  # nothing read while paused
        assert hose.sent < total  # what is in flight is the kernel's buffers, not ours
        assert hose.max_buffered <= 512 * 1024 + 2 * len(hose.block)
        transport.resume_reading()
        async with asyncio.timeout(TIMEOUT):
            assert await sipper.done is None
        assert sipper.received == total and hose.pauses >= 1
        assert sipper.hash.digest() == hashlib.sha256(hose.block * (total // len(hose.block))).digest()
    finally:
        srv.close()


async def test_plaintext_to_the_tls_port_is_refused(pki: Pki, leaves: dict[str, Leaf]) -> None:
    server, _ = contexts(pki, leaves)
    seen = Observed()
    handled: list[bool] = []

    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handled.append(True)

    async with tls_server(server, never, seen) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        async with asyncio.timeout(TIMEOUT):
            answer = await reader.read()
        writer.close()
    assert answer == b"" or answer[0] == 0x15  # nothing, or a TLS alert: never an HTTP answer
    assert [e.reason for e in seen.errors] == ["peer sent plaintext (an HTTP request), not TLS"]
    assert handled == [] and seen.negotiated == []


async def test_silent_client_times_out(pki: Pki, leaves: dict[str, Leaf]) -> None:
    server, _ = contexts(pki, leaves)
    seen = Observed()
    loop = asyncio.get_running_loop()

    def accept() -> TlsProtocol:
        return TlsProtocol(server.engine(), _Echo(), on_handshake=seen, handshake_timeout=0.05)

    srv = await loop.create_server(accept, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
        async with asyncio.timeout(TIMEOUT):
            assert await reader.read() == b""  # closed on us, nothing said
        writer.close()
    finally:
        srv.close()
    assert [e.reason for e in seen.errors] == ["TLS handshake not finished within 0.05s"]


@pytest.mark.parametrize(
    ("fields", "client_alert", "server_reason"),
    [
        ({"client_pq_policy": OFF}, "handshake_failure", "peer offered no post-quantum group"),
        ({"server_match_sans": san_matchers(("exact", spiffe_id("db")))}, "bad_certificate", "peer identity"),
    ],
)
async def test_refusals_reach_both_ends(
    pki: Pki, leaves: dict[str, Leaf], fields: dict[str, Any], client_alert: str, server_reason: str
) -> None:
    server, client = contexts(pki, leaves, **fields)
    seen = Observed()
    async with tls_server(server, echo, seen) as port:
        # TLS 1.3: a client certificate is judged after the client's handshake is over, so
        # that refusal reaches the client as an alert instead of its first data.
        with pytest.raises(TlsError) as refused:
            reader, _ = await open_tls(port, client)
            async with asyncio.timeout(TIMEOUT):
                await reader.read()
    assert refused.value.by_peer and refused.value.alert == client_alert
    await eventually(lambda: bool(seen.errors), TIMEOUT, "the server's verdict")
    assert seen.errors[0].reason.startswith(server_reason)


class Handover(asyncio.Protocol):
    """Plays the listener: wraps the accepted socket, then hands the TLS transport on."""

    def __init__(self, tls: TlsContext) -> None:
        self.tls = tls

    def connection_made(self, transport: Any) -> None:
        accept_tls(transport, self.tls, _ChainSelector())


class _ChainSelector(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        chosen = _Echo()
        transport.set_protocol(chosen)
        chosen.connection_made(transport)


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def test_listener_hands_the_tls_transport_to_its_protocol(pki: Pki, leaves: dict[str, Leaf]) -> None:
    server, client = contexts(pki, leaves)
    srv = await asyncio.get_running_loop().create_server(lambda: Handover(server), "127.0.0.1", 0)
    try:
        reader, writer = await open_tls(srv.sockets[0].getsockname()[1], client)
        writer.write(b"through the selector")
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(20) == b"through the selector"
        writer.close()
    finally:
        srv.close()


async def test_reconnect_resumes_with_the_hybrid_group(pki: Pki, leaves: dict[str, Leaf]) -> None:
    server, client = contexts(pki, leaves)
    async with tls_server(server, echo) as port:
        for resumed in (False, True):
            reader, writer = await open_tls(port, client)
            writer.write(b"ping")
            async with asyncio.timeout(TIMEOUT):
                assert await reader.readexactly(4) == b"ping"  # the ticket came before the echo
            negotiated = writer.get_extra_info("tls")
            assert negotiated.resumed is resumed and negotiated.group == "X25519MLKEM768"
            writer.close()


# --------------------------------------------------------------------------- interop with ssl


@pytest.fixture(scope="module")
def stdlib(pki: Pki, leaves: dict[str, Leaf], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The interpreter's ssl contexts over the same PKI (files: its API wants paths)."""
    tmp: Path = tmp_path_factory.mktemp("tls")
    made: dict[str, Any] = {}
    for role, purpose in (("server", ssl.PROTOCOL_TLS_SERVER), ("client", ssl.PROTOCOL_TLS_CLIENT)):
        (tmp / f"{role}.pem").write_bytes(leaves[role].chain)
        (tmp / f"{role}.key").write_bytes(leaves[role].key)
        ctx = ssl.SSLContext(purpose)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(tmp / f"{role}.pem", tmp / f"{role}.key")
        ctx.load_verify_locations(cadata=pki.ca_pem.decode())
        ctx.check_hostname = False  # the identity is a URI SAN, checked by our side only
        ctx.verify_mode = ssl.CERT_REQUIRED
        made[role] = ctx
    return made


FALLBACK = "X25519MLKEM768" if STDLIB_HAS_MLKEM else "X25519"


async def test_stdlib_client_to_our_server(pki: Pki, leaves: dict[str, Leaf], stdlib: dict[str, Any]) -> None:
    server, _ = contexts(pki, leaves, server_pq_policy=PREFERRED)
    seen = Observed()
    async with tls_server(server, echo, seen) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=stdlib["client"])
        writer.write(b"hello from ssl")
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(14) == b"hello from ssl"
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
        writer.close()
    assert seen.negotiated[0].group == FALLBACK and seen.negotiated[0].peer_uris == (spiffe_id("client"),)


async def test_our_client_to_stdlib_server(pki: Pki, leaves: dict[str, Leaf], stdlib: dict[str, Any]) -> None:
    _, client = contexts(pki, leaves, client_pq_policy=PREFERRED)
    srv = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=stdlib["server"])
    try:
        reader, writer = await open_tls(srv.sockets[0].getsockname()[1], client)
        writer.write(b"hello to ssl")
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(12) == b"hello to ssl"
        negotiated = writer.get_extra_info("tls")
        assert negotiated.group == FALLBACK and negotiated.peer_uris == (spiffe_id("server"),)
        writer.close()
    finally:
        srv.close()


@pytest.mark.skipif(STDLIB_HAS_MLKEM, reason="the interpreter's OpenSSL has ML-KEM: not a classical peer")
async def test_required_client_refuses_the_classical_stdlib_server(
    pki: Pki, leaves: dict[str, Leaf], stdlib: dict[str, Any]
) -> None:
    _, client = contexts(pki, leaves)
    srv = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=stdlib["server"])
    try:
        with pytest.raises(TlsError) as refused:
            await open_tls(srv.sockets[0].getsockname()[1], client)
        # asyncio's ssl transport (and uvloop's) drops the connection without sending its alert.
        assert refused.value.reason == (
            "peer closed the connection without answering our ClientHello "
            "(we offered only X25519MLKEM768: is the peer classical-only?)"
        )
    finally:
        srv.close()


@pytest.mark.skipif(STDLIB_HAS_MLKEM, reason="the interpreter's OpenSSL has ML-KEM: not a classical peer")
async def test_required_server_refuses_the_classical_stdlib_client(
    pki: Pki, leaves: dict[str, Leaf], stdlib: dict[str, Any]
) -> None:
    server, _ = contexts(pki, leaves)
    seen = Observed()
    async with tls_server(server, echo, seen) as port:
        with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
            async with asyncio.timeout(TIMEOUT):
                await asyncio.open_connection("127.0.0.1", port, ssl=stdlib["client"])
    assert seen.errors[0].reason == "peer offered no post-quantum group (policy requires X25519MLKEM768)"
