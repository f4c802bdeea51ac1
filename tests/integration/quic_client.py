"""An HTTP/3 client for the QUIC tests: aioquic under meshproxy's handshake (X25519MLKEM768, mTLS).

``h3_request`` opens one QUIC connection (a ``PqQuicConnection``: the same adapter the proxy
uses, so this is not an independent peer; Chromium is, tests/integration/test_quic_chromium.py),
sends requests on it and returns each response with the connection's ``Negotiated`` record.
``quic_listener`` builds the Envoy listener the tests configure. Imported as ``.quic_client``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer
from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3Connection
from aioquic.quic import events as qe
from unit.tls.tls_fixtures import Leaf

from meshproxy.quic.handshake import PqQuicConnection
from meshproxy.quic.tlsconfig import quic_configuration
from meshproxy.tls import TlsConfig
from meshproxy.tls.engine import Negotiated

from .harness import HCM, ROUTER, addr

QUIC_DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport"


def quic_listener(
    leaf: Leaf,
    ca_pem: bytes | None,
    routes: list[dict[str, Any]],
    *,
    name: str = "h3",
    access_log: str | None = None,
    require_client_certificate: bool = True,
    quic_options: dict[str, Any] | None = None,
    ecdh_curves: tuple[str, ...] = (),
    **hcm: Any,
) -> dict[str, Any]:
    """A UDP listener on 127.0.0.1 serving HTTP/3 with ``leaf``'s certificate (mTLS with ``ca_pem``);
    ``ecdh_curves`` as Envoy's tls_params (none: the ``preferred`` policy)."""
    common: dict[str, Any] = {
        "tls_certificates": [
            {
                "certificate_chain": {"inline_string": leaf.chain.decode()},
                "private_key": {"inline_string": leaf.key.decode()},
            }
        ]
    }
    if ecdh_curves:
        common["tls_params"] = {"ecdh_curves": list(ecdh_curves)}
    down: dict[str, Any] = {"common_tls_context": common}
    if ca_pem is not None:
        common["validation_context"] = {"trusted_ca": {"inline_string": ca_pem.decode()}}
        down["require_client_certificate"] = require_client_certificate
    manager: dict[str, Any] = {
        "@type": HCM,
        "stat_prefix": name,
        "codec_type": "HTTP3",
        "route_config": {
            "name": f"{name}_routes",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
        **hcm,
    }
    if access_log:
        manager["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": access_log,
                },
            }
        ]
    address = addr("127.0.0.1", 0)
    address["socket_address"]["protocol"] = "UDP"
    return {
        "name": name,
        "address": address,
        "udp_listener_config": {"quic_options": quic_options or {}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
                ],
                "transport_socket": {
                    "name": "envoy.transport_sockets.quic",
                    "typed_config": {"@type": QUIC_DOWNSTREAM, "downstream_tls_context": down},
                },
            }
        ],
    }


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reset: int | None = None


class H3Client(QuicConnectionProtocol):
    def __init__(self, quic: PqQuicConnection) -> None:
        super().__init__(quic)
        self.h3 = H3Connection(quic)
        self.responses: dict[int, tuple[Response, asyncio.Future[Response]]] = {}
        self.terminated: qe.ConnectionTerminated | None = None
        self.goaway: int | None = None  # the stream ID a GOAWAY named

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.ConnectionTerminated):
            self.terminated = event
            for _response, done in self.responses.values():
                if not done.done():
                    done.set_exception(ConnectionError(f"connection closed: {event.reason_phrase}"))
        elif isinstance(event, qe.StreamReset):
            entry = self.responses.get(event.stream_id)
            if entry is not None and not entry[1].done():
                entry[0].reset = event.error_code
                entry[1].set_result(entry[0])
        if isinstance(event, qe.StreamDataReceived) and event.stream_id % 4 == 3:
            self._control(event.data)
        for h3_event in self.h3.handle_event(event):
            entry = self.responses.get(getattr(h3_event, "stream_id", -1))
            if entry is None:
                continue
            response, done = entry
            if isinstance(h3_event, h3e.HeadersReceived):
                if response.status:
                    response.trailers = h3_event.headers
                else:
                    response.headers = h3_event.headers
                    response.status = int(dict(h3_event.headers)[b":status"])
            elif isinstance(h3_event, h3e.DataReceived):
                response.body += h3_event.data
            if getattr(h3_event, "stream_ended", False) and not done.done():
                done.set_result(response)

    def _control(self, data: bytes) -> None:
        """aioquic reports no GOAWAY: read it from the server's control stream (RFC 9114 §7.2.6)."""
        buf = Buffer(data=data)
        while not buf.eof():
            try:
                kind, length = buf.pull_uint_var(), buf.pull_uint_var()
                body = buf.pull_bytes(length)
            except ValueError:
                return  # a stream-type byte, or a frame split across reads: a test needs neither
            if kind == 0x7:
                self.goaway = Buffer(data=body).pull_uint_var()

    async def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]] = (),
        body: bytes = b"",  # type: ignore[assignment]
    ) -> Response:
        sid = self._quic.get_next_available_stream_id()
        done: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.responses[sid] = (Response(), done)
        head = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", b"mesh.local"),
            (b":path", path.encode()),
        ]
        self.h3.send_headers(sid, head + list(headers), end_stream=not body)
        if body:
            self.h3.send_data(sid, body, end_stream=True)
        self.transmit()
        return await asyncio.wait_for(done, 10)


async def connect(port: int, cfg: TlsConfig, **transport: Any) -> H3Client:
    """A connected client (raises ConnectionError when the handshake is refused)."""
    quic = PqQuicConnection(configuration=quic_configuration(cfg, **transport), tls_config=cfg)
    loop = asyncio.get_running_loop()
    _, client = await loop.create_datagram_endpoint(lambda: H3Client(quic), remote_addr=("127.0.0.1", port))
    client.connect(("127.0.0.1", port))
    await asyncio.wait_for(client.wait_connected(), 10)
    return client


def negotiated(client: H3Client) -> Negotiated:
    assert isinstance(client._quic, PqQuicConnection)
    return client._quic.negotiated


async def refused(port: int, cfg: TlsConfig) -> qe.ConnectionTerminated:
    """How the proxy ended a handshake it refused (before or just after ours completed)."""
    quic = PqQuicConnection(configuration=quic_configuration(cfg), tls_config=cfg)
    loop = asyncio.get_running_loop()
    _, client = await loop.create_datagram_endpoint(lambda: H3Client(quic), remote_addr=("127.0.0.1", port))
    client.connect(("127.0.0.1", port))
    await asyncio.wait_for(client.wait_closed(), 10)
    assert client.terminated is not None
    return client.terminated
