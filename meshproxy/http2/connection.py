"""The shell both HTTP/2 connection halves share: h2's state machine under an asyncio transport.

Owns sending with flow control. DATA to send waits per stream in a ``Half`` until both the
peer's window and our transport allow it; each chunk, once handed to h2, is acknowledged on
the connection it came from (``Half.ack``), which is what reopens that peer's window. So the
proxy never holds more of a stream than the window it advertised to the sender, and a slow
reader stops its writer through windows alone (RFC 9113 §5.2), with no unbounded buffer.
Writes of one event batch are coalesced into one ``transport.write``; writes caused by the
other connection are flushed once per loop iteration (``want_flush``).

h2 validates what it receives; what we send it does not re-check or normalise (7-20 % of the
CPU per relayed request, docs/http2.md). That is safe because every header block we send is
built from one h2 already validated on the way in, or from the HTTP/1.1 codec (lower-case
names, values stripped, hop-by-hop fields dropped), plus pseudo-headers and mutations
(lower-cased at config compile) of our own. The two things h2's outbound normalisation did
for us are in ``fields.py``: connection-specific fields dropped, credentials never-indexed.
The codec is the libnghttp2 binding (``_codec_c``) where it was built, else its twin h2
(``_codec_py``), chosen by ``meshproxy._ext`` (``MESHPROXY_NO_EXTENSIONS=1`` or
``MESHPROXY_H2_CODEC=h2`` force the twin): the same API and events.
Must not know about routing or clusters: subclasses handle the events.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from h2.errors import ErrorCodes
from h2.events import Event
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame

from meshproxy._ext import load_twin
from meshproxy.config.model import Http2Options

CODEC = load_twin("meshproxy.http2._codec")  # the HTTP/2 codec every connection uses


class Half:
    """One direction of one stream: DATA (and its end or trailers) waiting to go out."""

    __slots__ = ("ack", "chunks", "done", "end", "on_done", "trailers")

    def __init__(self, on_done: Callable[[], None]) -> None:
        self.chunks: deque[tuple[bytes, int]] = deque()  # (data, bytes to acknowledge at its source)
        self.end = False
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.done = False
        self.ack: Callable[[int], None] | None = None
        self.on_done = on_done

    def pending(self) -> int:
        return sum(len(c) for c, _ in self.chunks)

    def discard(self) -> None:
        """Nothing more goes out: drop what is held, and give its window back at its source
        (a reset stream's bytes still count against the connection window, RFC 9113 §6.9)."""
        self.done = True
        if self.chunks:
            flow = sum(f for _, f in self.chunks)
            self.chunks.clear()
            if flow and self.ack is not None:
                self.ack(flow)


def local_settings(options: Http2Options, *, client: bool, max_header_list: int) -> dict[SettingCodes, int]:
    settings = {
        SettingCodes.MAX_CONCURRENT_STREAMS: options.max_concurrent_streams,
        SettingCodes.INITIAL_WINDOW_SIZE: options.initial_stream_window_size,
        SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list,
        SettingCodes.HEADER_TABLE_SIZE: options.hpack_table_size,
    }
    if client:
        settings[SettingCodes.ENABLE_PUSH] = 0
    return settings


class H2Peer(asyncio.Protocol):
    """h2 under a transport; subclasses implement ``handle`` for each event."""

    def __init__(
        self, options: Http2Options, *, client: bool, max_header_list: int, max_headers: int
    ) -> None:
        """``max_header_list`` (bytes, RFC 7541 §4.1) and ``max_headers`` (fields) bound each
        header block the peer sends: advertised in SETTINGS_MAX_HEADER_LIST_SIZE and enforced
        from the first block, before the peer acknowledged our SETTINGS (``decoder.py``)."""
        self.loop = asyncio.get_running_loop()
        self.options = options
        self.h2 = CODEC.new_connection(
            client=client,
            settings=local_settings(options, client=client, max_header_list=max_header_list),
            max_header_list=max_header_list,
            max_headers=max_headers,
        )
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made, before any use
        self.write_paused = False
        self.closed = False
        self.waiting: dict[int, Half] = {}  # streams with DATA held for a window or the transport
        self._flush_soon = False

    def start(self, transport: asyncio.BaseTransport, buffer_limit: int) -> None:
        self.transport = transport  # type: ignore[assignment]  # asyncio passes a BaseTransport; stream transports are Transports
        transport.set_write_buffer_limits(high=buffer_limit)  # type: ignore[attr-defined]  # a Transport method; connection_made is typed with BaseTransport
        h2 = self.h2
        h2.initiate_connection()
        extra = self.options.initial_connection_window_size - h2.inbound_flow_control_window
        if extra > 0:
            h2.increment_flow_control_window(extra)
        self.flush()

    # ------------------------------------------------------------------ bytes in and out

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return  # we ended the connection (h2 accepts nothing after its own GOAWAY)
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            # h2 has queued GOAWAY with the error's code (ENHANCE_YOUR_CALM for a DoS pattern).
            self.protocol_error(exc)
            self.flush()
            self.transport.close()
            return
        handle = self.handle
        for event in events:
            handle(event)
            if self.closed:
                return  # ended for abuse: the rest of the read is not acted on
        self.batch_done()
        self.flush()

    def send_goaway(self, last_stream_id: int, code: int = ErrorCodes.NO_ERROR) -> None:
        """A GOAWAY that keeps the connection usable for streams up to ``last_stream_id``.

        h2's ``close_connection`` moves its state machine to CLOSED, after which it refuses every
        frame, so a graceful drain writes the frame itself (RFC 9113 §6.8).
        """
        self.flush()
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = code
        if not self.closed:
            self.transport.write(frame.serialize())

    def flush(self) -> None:
        self._flush_soon = False
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def want_flush(self) -> None:
        if not self._flush_soon:
            self._flush_soon = True
            self.loop.call_soon(self.flush)

    def handle(self, event: Event) -> None:  # pragma: no cover - subclasses
        raise NotImplementedError

    def batch_done(self) -> None:
        """Every event of one read was handled (the downstream starts its new streams here)."""

    def protocol_error(self, exc: ProtocolError) -> None:  # pragma: no cover - subclasses
        raise NotImplementedError

    # ------------------------------------------------------------------ flow control

    def pump(self, sid: int, half: Half) -> None:
        """Send what ``half`` holds as far as windows and the transport allow."""
        if half.done or self.closed:
            return
        h2 = self.h2
        chunks = half.chunks
        try:
            while chunks:
                if self.write_paused:
                    self.waiting[sid] = half
                    return
                data, ack = chunks[0]
                window = min(h2.local_flow_control_window(sid), h2.max_outbound_frame_size)
                if window <= 0:
                    self.waiting[sid] = half
                    self.want_flush()  # what went out before the window closed
                    return
                if window < len(data):
                    h2.send_data(sid, data[:window])
                    chunks[0] = (data[window:], ack)
                    continue
                chunks.popleft()
                h2.send_data(sid, data)
                if ack and half.ack is not None:
                    half.ack(ack)
            if half.end:
                if half.trailers is not None:
                    h2.send_headers(sid, half.trailers, end_stream=True)
                else:
                    h2.end_stream(sid)
                half.done = True
        except (StreamClosedError, ProtocolError):
            half.done = True  # the stream was reset meanwhile: nothing more can go out on it
            chunks.clear()
        self.waiting.pop(sid, None)
        self.want_flush()
        if half.done:
            half.on_done()

    def window_opened(self, sid: int) -> None:
        if sid == 0:
            for s, half in list(self.waiting.items()):
                self.pump(s, half)
        else:
            waiting = self.waiting.get(sid)
            if waiting is not None:
                self.pump(sid, waiting)

    def ack(self, sid: int, size: int) -> None:
        """Return ``size`` bytes of window to the peer: the proxy has passed them on."""
        if self.closed:
            return
        try:
            self.h2.acknowledge_received_data(size, sid)
        except (ProtocolError, StreamClosedError):
            return
        self.want_flush()

    def reset(self, sid: int, code: int = ErrorCodes.CANCEL) -> bool:
        """RST_STREAM ``sid`` (if it is still open); True when a frame was sent."""
        self.waiting.pop(sid, None)
        if self.closed:
            return False
        try:
            self.h2.reset_stream(sid, code)
        except (ProtocolError, StreamClosedError):
            return False
        self.want_flush()
        return True

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.window_opened(0)

    def extra(self, name: str) -> Any:
        return self.transport.get_extra_info(name) if self.transport is not None else None
