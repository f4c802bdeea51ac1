"""The injection webhook's HTTPS server (15017): the I/O shell around `admission.review`.

Owns the sockets, TLS and HTTP/1.1 framing the API server's webhook client speaks: ``POST
/inject`` with a JSON body (Content-Length framed), keep-alive. TLS is meshproxy's own engine
(TLS 1.3, ``preferred`` post-quantum policy: X25519MLKEM768 for an API server built with Go 1.24
or later, X25519 otherwise; ALPN ``http/1.1``) with the controlplane's serving certificate from
its CA (`controlplane.serving_tls.ServingCertificate`, checked for renewal at each accepted
connection); the webhook configuration's ``caBundle`` is that CA.

Bounds (a webhook must answer within the API server's timeout, 10 s by default, at most 30 s):
a request body above ``MAX_BODY`` is answered 413 and the connection closed; a connection that
has not delivered a complete request within ``REQUEST_TIMEOUT`` seconds of connecting or of its
previous answer is closed; chunked bodies (the API server always sends Content-Length) are 411.
Other paths are 404, other methods on ``/inject`` 405. Each review is logged with its outcome.

Must not depend on: the injection rules (``admission``), a Kubernetes client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

import httptools

from controlplane.k8s import admission
from controlplane.k8s.sidecar import Target
from controlplane.serving_tls import Serving, ServingCertificate
from meshproxy.tls.config import TlsConfig
from meshproxy.tls.context import TlsContext
from meshproxy.tls.policy import PREFERRED
from meshproxy.tls.transport import accept_tls

log = logging.getLogger("controlplane.webhook")

PATH = "/inject"
MAX_BODY = 4 * 1024 * 1024  # the API server caps request objects at 3 MiB
REQUEST_TIMEOUT = 30.0
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}
_REASONS |= {411: b"Length Required", 413: b"Content Too Large"}


def tls_context(serving: Serving) -> TlsContext:
    """The server side of the webhook's TLS with ``serving``'s certificate."""
    cfg = TlsConfig(
        server_side=True,
        certificate_chain=serving.chain_pem,
        private_key=serving.key_pem,
        pq_policy=PREFERRED,
        alpn=("http/1.1",),
    )
    return TlsContext(cfg)


class WebhookServer:
    """Serves `admission.review` for ``target`` over HTTPS; ``start`` binds, ``close`` stops."""

    def __init__(self, target: Target, serving: ServingCertificate, clock: Callable[[], datetime]) -> None:
        self.target = target
        self.serving = serving
        self.clock = clock
        self.tls = tls_context(serving.current)
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port); returns the port bound."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._accept, host, port)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def _accept(self) -> asyncio.Protocol:
        renewed = self.serving.renewed(self.clock())
        if renewed is not None:
            self.tls = tls_context(renewed)
        return _Accepted(self.tls, lambda: _Exchange(self.target))


class _Accepted(asyncio.Protocol):
    """Hands the fresh socket to TLS, with `_Exchange` above it."""

    def __init__(self, tls: TlsContext, inner: Callable[[], _Exchange]) -> None:
        self.tls = tls
        self.inner = inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        accept_tls(transport, self.tls, self.inner())  # type: ignore[arg-type]  # a stream transport


class _Exchange(asyncio.Protocol):
    """One connection's requests, in turn (httptools callbacks)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = bytearray()
        self.refused = 0  # a status that ends the connection, set while parsing
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # the TLS transport
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._finish(400, b'{"error":"not HTTP/1.1"}', close=True)
        if self.refused:
            self._finish(self.refused, b"{}", close=True)

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"transfer-encoding":
            self.refused = 411
        elif name.lower() == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY):
            self.refused = 413

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > MAX_BODY:
            self.refused = 413
            return
        self.body += body

    def on_message_complete(self) -> None:
        if self.refused:
            return
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        method = self.parser.get_method()
        if path != PATH:
            self._finish(404, b'{"error":"not found"}')
        elif method != b"POST":
            self._finish(405, b'{"error":"POST an AdmissionReview"}')
        else:
            answer = admission.review(bytes(self.body), self.target)
            if answer.warnings or answer.outcome != "unchanged":
                log.info("admission review: %s %s", answer.outcome, "; ".join(answer.warnings))
            self._finish(answer.status, answer.encoded())
        self.url = b""
        self.body.clear()

    def _finish(self, status: int, body: bytes, *, close: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        close = close or not self.parser.should_keep_alive()
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
            status,
            _REASONS[status],
            len(body),
        )
        self.transport.write(head + (b"connection: close\r\n\r\n" if close else b"\r\n") + body)
        if close:
            self.transport.close()
        else:
            self._arm()

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(REQUEST_TIMEOUT, self._expire)

    def _expire(self) -> None:
        if self.transport is not None:
            self.transport.close()
