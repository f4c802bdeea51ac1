"""What both HTTP/3 connection halves share: aioquic's QUIC shell, sending a stream's ``Half``, resets.

Owns sending with a bound: a stream's DATA (from the other connection, held in its ``Half`` as
on HTTP/2) is handed to aioquic only while aioquic holds less than the stream's share of the
buffer limit for it unsent or unacknowledged; the rest waits in the ``Half``, and its source is
acknowledged only as it moves, so a slow reader stops its writer (``http2/connection.py``'s
rule, with aioquic's send buffer in place of the peer's window). Also the mapping of the HTTP/2
error codes the stream relay speaks onto HTTP/3's (RFC 9114 §8.1) and resets both ways.
Must not know about routing or clusters: subclasses handle the events.
"""

from __future__ import annotations

from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3Connection
from aioquic.h3.exceptions import H3Error
from h2.errors import ErrorCodes

from meshproxy.http2.connection import Half
from meshproxy.quic.handshake import PqQuicConnection

H3_NO_ERROR = 0x100
H3_INTERNAL_ERROR = 0x102
H3_REQUEST_REJECTED = 0x10B
H3_REQUEST_CANCELLED = 0x10C
H3_MESSAGE_ERROR = 0x10E
_H3_CODES = {
    ErrorCodes.NO_ERROR: H3_NO_ERROR,
    ErrorCodes.CANCEL: H3_REQUEST_CANCELLED,
    ErrorCodes.REFUSED_STREAM: H3_REQUEST_REJECTED,
    ErrorCodes.PROTOCOL_ERROR: H3_MESSAGE_ERROR,
}
_H2_CODES = {h3: h2 for h2, h3 in _H3_CODES.items()}
# What aioquic raises when a stream's direction has already ended (reset, or finished).
STREAM_GONE = (AssertionError, ValueError, H3Error)


def h2_code(h3_code: int) -> int:
    """The HTTP/2 code the stream relay understands for an HTTP/3 error code."""
    return _H2_CODES.get(h3_code, ErrorCodes.INTERNAL_ERROR)


class H3Peer(QuicConnectionProtocol):
    def __init__(self, quic: PqQuicConnection) -> None:
        super().__init__(quic)
        self.quic = quic
        self.loop = self._loop
        self.h3: H3Connection | None = None  # once the handshake has completed
        self.waiting: dict[int, Half] = {}  # DATA held for aioquic's send buffer
        self.closed = False

    def stream_share(self) -> int:
        raise NotImplementedError

    def pump(self, sid: int, half: Half) -> None:
        """Hand ``half``'s DATA to aioquic while its send buffer for ``sid`` is short; then its end."""
        h3 = self.h3
        if half.done or self.closed or h3 is None:
            return
        share = self.stream_share()
        chunks = half.chunks
        try:
            while chunks:
                if self._unsent(sid) > share:
                    self.waiting[sid] = half
                    self._transmit_soon()
                    return
                data, ack = chunks.popleft()
                h3.send_data(sid, data, end_stream=False)
                if ack and half.ack is not None:
                    half.ack(ack)
            if half.trailers is not None:
                h3.send_headers(sid, half.trailers, end_stream=True)
            elif half.end:
                h3.send_data(sid, b"", end_stream=True)
            else:
                self._transmit_soon()
                return
        except STREAM_GONE:
            half.discard()
            return
        self.waiting.pop(sid, None)
        half.done = True
        self._transmit_soon()
        half.on_done()

    def _unsent(self, sid: int) -> int:
        """Bytes of stream ``sid`` aioquic holds until the peer acknowledges them (its send buffer)."""
        stream = self.quic._streams.get(sid)
        return 0 if stream is None else len(stream.sender._buffer)

    def transmit(self) -> None:
        super().transmit()
        if self.waiting:
            share = self.stream_share()
            for sid, half in list(self.waiting.items()):
                if self._unsent(sid) <= share:
                    del self.waiting[sid]
                    self.pump(sid, half)

    def send_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if self.closed or self.h3 is None:
            return
        try:
            self.h3.send_headers(sid, headers, end_stream=end)
        except STREAM_GONE:
            return
        self._transmit_soon()

    def reset(self, sid: int, code: int) -> bool:
        """End ``sid`` early with the HTTP/3 form of HTTP/2 ``code``; False once closed.

        NO_ERROR (the relay's "complete response, request no longer wanted") is STOP_SENDING
        alone: in QUIC, RESET_STREAM would abandon response bytes not yet acknowledged, where an
        HTTP/2 RST_STREAM follows frames already written (RFC 9114 §4.1.1)."""
        if self.closed:
            return False
        h3_code = _H3_CODES.get(code, H3_INTERNAL_ERROR)  # type: ignore[call-overload]  # an h2 ErrorCodes int
        ends = (
            (self.quic.stop_stream,)
            if code == ErrorCodes.NO_ERROR
            else (self.quic.reset_stream, self.quic.stop_stream)
        )
        for send in ends:
            try:
                send(sid, h3_code)
            except STREAM_GONE:  # that direction had already ended
                pass
        self._transmit_soon()
        return True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        raise NotImplementedError
