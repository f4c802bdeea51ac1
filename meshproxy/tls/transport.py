"""The asyncio shell around a ``TlsEngine``: TLS on a socket, a transport for the protocol above.

Owns the I/O of one TLS connection and nothing else: ``TlsProtocol`` is the socket transport's
protocol; it feeds the engine, writes what the engine produces, and after the handshake hands
a ``TlsTransport`` to the inner protocol (HTTP codec, TCP relay), forwarding flow control both
ways. The socket transport's write buffer is the only one: ciphertext goes straight to it,
so ``pause_writing`` reaches the inner protocol when the socket backs up; ``pause_reading`` on
the TLS transport pauses the socket, and plaintext already decrypted waits in the engine.

Cost, per event once the connection is up: one call into the record path (``engine.decrypt``:
the ciphertext fed, all the plaintext it completes read out, and whatever OpenSSL answered;
``engine.encrypt``: SSL_write and the outgoing BIO drained), one socket write. No coroutine
runs per connection; the handshake is callbacks too (``connect_tls`` awaits it for its caller).

Policy (which config, what to count or log) belongs to the owners: ``on_handshake`` tells
them how each handshake ended.

Memory: once the socket is gone the engine's OpenSSL state is freed at once (``release``), and
a stored ``TlsError`` keeps no traceback: its frames would hold this protocol in a reference
cycle, keeping each failed handshake's SSL object alive until a full collection (finding 9).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from meshproxy.tls.errors import TlsError

if TYPE_CHECKING:  # the engine (pyOpenSSL) loads with the first TlsContext, at config time
    from meshproxy.tls.context import TlsContext
    from meshproxy.tls.engine import Negotiated, TlsEngine

log = logging.getLogger("meshproxy.tls")

HANDSHAKE_TIMEOUT = 10.0

HandshakeObserver = Callable[["Negotiated | None", "TlsError | None"], None]


class TlsProtocol(asyncio.Protocol):
    """Drives ``engine`` over the socket it is made for; ``inner`` sees a ``TlsTransport``."""

    def __init__(
        self,
        engine: TlsEngine,
        inner: asyncio.BaseProtocol,
        *,
        on_handshake: HandshakeObserver | None = None,
        handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.engine = engine
        self.inner: Any = inner
        self.transport = TlsTransport(self)
        self.sock: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made, first
        self.connected = False  # handshake done, inner protocol told
        self.closing = False
        self.write_closed = False  # close_notify sent by write_eof()
        self.paused = False
        self.error: TlsError | None = None
        self._on_handshake = on_handshake
        self._timeout = handshake_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False
        self._eof_told = False

    # ------------------------------------------------------------------ socket events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sock = transport  # type: ignore[assignment]  # a stream transport
        if self._timeout is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._timeout, self._timed_out)
        try:
            self.engine.start_handshake()
        except TlsError as exc:
            self._fail(exc)
            return
        self._flush()

    def data_received(self, data: bytes) -> None:
        engine = self.engine
        try:
            if not self.connected:
                engine.receive_data(data)
                if not engine.handshake_complete:
                    self._flush()
                    return
                self._handshake_done()
                self._deliver()
            elif self.paused or self.closing:
                engine.receive_data(data)  # kept in OpenSSL until resume_reading (or dropped)
            else:
                plaintext, answer = engine.decrypt(data)
                if answer:  # before anything the inner protocol writes in reply
                    self.sock.write(answer)
                self._hand_over(plaintext)
                return
        except TlsError as exc:
            self._fail(exc)
            return
        self._flush()

    def eof_received(self) -> bool:
        try:
            self.engine.receive_eof()
            self._deliver()
        except TlsError as exc:
            self._fail(exc)
        return True  # _deliver closes once the inner protocol has seen the end

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.closing = True  # the inner protocol's later writes have nowhere to go
        self._cancel_timer()
        self.engine.release()
        if self.connected:
            self.inner.connection_lost(self.error or exc)
        elif self.error is None:
            reason = f"connection lost during the TLS handshake ({exc or 'closed by peer'})"
            self._tell(None, TlsError(reason, code="connection_lost"))

    def pause_writing(self) -> None:
        if self.connected:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.connected:
            self.inner.resume_writing()

    # ------------------------------------------------------------------ internals

    def _flush(self) -> None:
        data = self.engine.data_to_send()
        if data and not self._lost:
            self.sock.write(data)

    def _deliver(self) -> None:
        """Hand decrypted data, then the end of the stream, to the inner protocol (unless paused,
        or closed by it: a closed transport delivers nothing more)."""
        if self.paused or self.closing or not self.connected:
            return
        self._hand_over(self.engine.read())

    def _hand_over(self, data: bytes) -> None:
        if data:
            self.inner.data_received(data)
        if self.engine.peer_closed and not self._eof_told and not self.paused:
            self._eof_told = True
            if not self.inner.eof_received():
                self.transport.close()

    def _resume(self) -> None:
        if self.paused or self._lost:
            return
        try:
            self._deliver()
        except TlsError as exc:
            self._fail(exc)
            return
        self._flush()

    def _handshake_done(self) -> None:
        self._cancel_timer()
        self.connected = True
        self.inner.connection_made(self.transport)
        self._tell(self.engine.negotiated, None)

    def _fail(self, exc: TlsError) -> None:
        """Send the alert OpenSSL queued, then close; the owners learn why."""
        if self.error is not None:
            return
        self.error = exc.with_traceback(None)  # see the module docstring: no cycle through frames
        self._cancel_timer()
        if not self.connected:
            self._tell(None, exc)
        peer = self.sock.get_extra_info("peername") if self.sock else None
        log.debug("TLS with %s failed: %s", peer, exc.reason)
        self._flush()
        self.closing = True
        self.sock.close()

    def _timed_out(self) -> None:
        self._timer = None
        if not self.connected:
            reason = f"TLS handshake not finished within {self._timeout:g}s"
            self._fail(TlsError(reason, code="handshake_timeout"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tell(self, negotiated: Negotiated | None, error: TlsError | None) -> None:
        observer, self._on_handshake = self._on_handshake, None
        if observer is not None:
            observer(negotiated, error)

    def _close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.engine.close()
        self._flush()
        self.sock.close()


class TlsTransport(asyncio.Transport):
    """What the inner protocol writes to: plaintext in, TLS records out through ``TlsProtocol``."""

    def __init__(self, owner: TlsProtocol) -> None:
        super().__init__()
        self._owner = owner

    def write(self, data: bytes | bytearray | memoryview) -> None:
        owner = self._owner
        if owner.write_closed:
            raise RuntimeError("Cannot call write() after write_eof()")
        if owner.closing or owner.error is not None:
            return  # like a socket transport after close: the bytes have nowhere to go
        try:
            records = owner.engine.encrypt(data)
        except TlsError as exc:
            owner._fail(exc)
            return
        if records:
            owner.sock.write(records)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        """close_notify ends our direction (TLS 1.3 allows the peer to go on writing)."""
        owner = self._owner
        if owner.write_closed or owner.closing:
            return
        owner.write_closed = True
        owner.engine.close()
        owner._flush()
        if owner.sock.can_write_eof():
            owner.sock.write_eof()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self._owner._close()

    def abort(self) -> None:
        self._owner.closing = True
        self._owner.sock.abort()

    def is_closing(self) -> bool:
        return self._owner.closing or self._owner.sock.is_closing()

    def pause_reading(self) -> None:
        owner = self._owner
        if not owner.paused:
            owner.paused = True
            owner.sock.pause_reading()

    def resume_reading(self) -> None:
        owner = self._owner
        if owner.paused:
            owner.paused = False
            if not owner._lost:
                owner.sock.resume_reading()
                # Plaintext decrypted before the pause is handed over on the next loop turn,
                # not from inside the caller's own resume_reading().
                asyncio.get_running_loop().call_soon(owner._resume)

    def is_reading(self) -> bool:
        return not self._owner.paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._owner.sock.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._owner.sock.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._owner.sock.get_write_buffer_limits()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "tls":
            return self._owner.engine.negotiated
        return self._owner.sock.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._owner.inner = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._owner.inner


def accept_tls(
    transport: asyncio.Transport,
    tls: TlsContext,
    inner: asyncio.BaseProtocol,
    *,
    on_handshake: HandshakeObserver | None = None,
    handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
) -> TlsProtocol:
    """Put TLS (server side) under ``inner`` on a freshly accepted socket transport.

    For a listener whose filter chain has a DownstreamTlsContext: the socket transport's
    protocol becomes the returned ``TlsProtocol``; ``inner`` gets ``connection_made`` with the
    ``TlsTransport`` once the handshake has succeeded, and never if it fails.
    """
    proto = TlsProtocol(tls.engine(), inner, on_handshake=on_handshake, handshake_timeout=handshake_timeout)
    transport.set_protocol(proto)
    proto.connection_made(transport)
    return proto


_P = TypeVar("_P", bound=asyncio.BaseProtocol)


async def connect_tls(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    tls: TlsContext,
    protocol_factory: Callable[[], _P],
    server_hostname: str | None = None,
    *,
    handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
    local_addr: tuple[str, int] | None = None,
) -> tuple[TlsTransport, _P]:
    """Connect, handshake (resuming a cached session to the same upstream), return like
    ``create_connection``. SNI: ``server_hostname``, else the config's ``sni``, else ``host``
    unless it is an IP address; ``local_addr``: the source address to bind. Raises TlsError
    (handshake) or OSError (connect)."""
    if server_hostname is None:
        server_hostname = tls.cfg.sni or ("" if _is_ip(host) else host)
    engine = tls.engine(server_hostname, session_key=(host, port, server_hostname))
    done: asyncio.Future[None] = loop.create_future()

    def on_handshake(_negotiated: Negotiated | None, error: TlsError | None) -> None:
        if not done.done():
            done.set_exception(error) if error is not None else done.set_result(None)

    inner = protocol_factory()
    proto = TlsProtocol(engine, inner, on_handshake=on_handshake, handshake_timeout=handshake_timeout)
    sock, _ = await loop.create_connection(lambda: proto, host, port, local_addr=local_addr)
    try:
        await done
    except BaseException:
        sock.abort()
        raise
    return proto.transport, inner


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
