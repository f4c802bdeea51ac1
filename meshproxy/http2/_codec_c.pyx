# cython: language_level=3
"""The HTTP/2 codec on libnghttp2: frames, HPACK and flow control in C, h2's API and events.

Owns ``Connection``, a client or server ``nghttp2_session`` behind the subset of h2's
``H2Connection`` that ``connection.py``, ``downstream.py`` and ``upstream.py`` use, producing h2's
event classes with the attributes the handlers read; ``_codec_py`` is its twin (h2 itself), and
``tests/unit/http2/test_nghttp2_codec.py`` feeds both the same bytes and compares the events.

How the two models meet:
- Receiving: nghttp2's callbacks build one event per frame. A header block is collected field by
  field into ONE list of ``(bytes, bytes)`` (never-indexed fields as hpack's
  ``NeverIndexedHeaderTuple``) and bounded while it is decoded, as ``decoder.py`` bounds it: more
  than ``max_headers`` fields or ``max_header_list`` bytes (RFC 7541 §4.1) ends the connection
  with GOAWAY ENHANCE_YOUR_CALM and ``DenialOfServiceError``. DATA chunks are joined per frame, so
  ``DataReceived`` carries a frame's payload and its ``flow_controlled_length`` (padding
  included), as h2's does. A stream nghttp2 resets for the peer's error gives ``StreamReset``
  (``remote_reset=False``); a connection error it answers with GOAWAY raises ``ProtocolError``,
  and so does a header block or message HTTP/2 forbids (nghttp2's HTTP messaging checks, which
  would reset only the stream, as Envoy does): h2's inbound validation ends the connection there,
  and the handlers and their tests expect that of both codecs.
- Flow control is manual (``NGHTTP2_OPT_NO_AUTO_WINDOW_UPDATE``): ``acknowledge_received_data``
  is ``nghttp2_session_consume``, called when the proxy has passed the bytes on.
- Sending: ``send_data`` appends to the stream's buffer; a data provider hands it to nghttp2 as
  windows allow and defers (``NGHTTP2_ERR_DEFERRED``) when it is empty, resumed by the next
  ``send_data``/``end_stream``. ``local_flow_control_window`` subtracts what is buffered and not
  yet framed, so the caller's pump never queues more than the peer's window. ``reset_stream``
  after a reply's DATA and end waits for them to be framed (h2 frames every call at once).
- Client streams: ``get_next_available_stream_id`` is the id ``nghttp2_submit_request`` assigns
  next; ``send_headers`` on it submits the request.
- A request block is checked and split into the stream's inputs in one pass (``request_head``,
  ``fields.request_head``'s results): nghttp2's HTTP messaging already refused what is not a
  lower-case token name, a token ``:method``, a value with CTLs or surrounding whitespace, and
  pseudo-header misuse, so only what it allows and the proxy does not is checked here (``:path``
  origin-form of visible ASCII without ``#``, ``:authority`` without userinfo) and underscores;
  ``response_head`` splits a response block as ``fields.response_head`` does.
Exceptions are h2's (``ProtocolError``, ``DenialOfServiceError``, ``StreamClosedError``), so the
handlers catch the same things for both codecs. Must not depend on asyncio or on the proxy.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcpy

from meshproxy.http2._libnghttp2 cimport *

from h2 import events as ev
from h2.errors import ErrorCodes
from h2.exceptions import DenialOfServiceError, ProtocolError, StreamClosedError
from h2.settings import ChangedSetting, SettingCodes
from hpack import NeverIndexedHeaderTuple

from meshproxy.http2.fields import REQUEST_DROP, RESPONSE_DROP, SENSITIVE, Malformed, Underscored, never_indexed

CODEC = "nghttp2"

cdef int SETTINGS_INITIAL_WINDOW_SIZE = 4
# RFC 9113 §6.5.2 initial values, for ChangedSetting.original_value before the first SETTINGS.
cdef dict DEFAULT_SETTINGS = {1: 4096, 2: 1, 4: 65535, 5: 16384}


cdef bint PATH_OK[256]  # visible ASCII but '#'
cdef bint AUTHORITY_OK[256]  # RFC 3986 authority characters without '@'
cdef int _c
for _c in range(256):
    PATH_OK[_c] = 0x21 <= _c < 0x7F and _c != 0x23
    AUTHORITY_OK[_c] = _c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;=[]:"


cdef bint _all(const bint* table, bytes value):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(value)
    cdef Py_ssize_t i
    for i in range(PyBytes_GET_SIZE(value)):
        if not table[p[i]]:
            return False
    return True


def request_head(list headers, str underscores):
    """A request block nghttp2 accepted, checked and split: ``fields.request_head``'s result
    (``RequestHead``) and errors (``Malformed``, ``Underscored``), in one pass."""
    cdef bint strict = underscores != "ALLOW"
    cdef bint refuse = underscores == "REJECT_REQUEST"
    cdef Py_ssize_t dropped = 0
    cdef bytes name, value
    cdef const char* p
    method = url = scheme = b""
    authority = xff = xfp = request_id = content_type = None
    cdef list kept = []
    for header in headers:
        name = <bytes>header[0]
        value = <bytes>header[1]
        p = PyBytes_AS_STRING(name)
        if p[0] == 0x3A:  # pseudo-header (nghttp2 allows only the four of a request)
            if name == b":method":
                method = value
            elif name == b":path":
                if not ((PyBytes_AS_STRING(value)[0] == 0x2F and _all(PATH_OK, value)) or value == b"*"):
                    raise Malformed(f"invalid {name.decode()} {value[:64]!r}")
                url = value
            elif name == b":authority":
                if not _all(AUTHORITY_OK, value):
                    raise Malformed(f"invalid {name.decode()} {value[:64]!r}")
                authority = value.lower()
            elif name == b":scheme":
                scheme = value
        elif strict and memchr(p, 0x5F, PyBytes_GET_SIZE(name)) != NULL:
            if refuse:
                raise Underscored(f"header name with an underscore {name[:64]!r}")
            dropped += 1
        elif name in REQUEST_DROP:
            if name == b"host" and authority is None:
                authority = value.lower()
            elif name == b"x-forwarded-for":
                xff = value
            elif name == b"x-forwarded-proto":
                xfp = value
            elif name == b"x-request-id":
                request_id = value
        else:
            if name == b"content-type":
                content_type = value
            elif name in SENSITIVE:
                header = never_indexed(name, value)
            kept.append(header)
    return method, url, authority, scheme, xff, xfp, request_id, content_type, kept, dropped


def response_head(list headers):
    """An upstream's response block split as ``fields.response_head`` splits it."""
    cdef int status = 0
    cdef bytes name, value
    cdef const char* v
    grpc_status = None
    cdef list out = []
    for header in headers:
        name = <bytes>header[0]
        value = <bytes>header[1]
        if name == b":status":
            v = PyBytes_AS_STRING(value)
            if (PyBytes_GET_SIZE(value) == 3 and 0x30 <= v[0] <= 0x39 and 0x30 <= v[1] <= 0x39
                    and 0x30 <= v[2] <= 0x39):
                status = (v[0] - 0x30) * 100 + (v[1] - 0x30) * 10 + v[2] - 0x30
            else:
                status = 0
        elif name in SENSITIVE:
            out.append(never_indexed(name, value))
        elif name not in RESPONSE_DROP:
            if name == b"grpc-status":
                grpc_status = value
            out.append(header)
    return status, grpc_status, out


cdef object _error_code(uint32_t code):
    try:
        return ErrorCodes(code)
    except ValueError:
        return code


cdef object _setting_code(int32_t code):
    try:
        return SettingCodes(code)
    except ValueError:
        return code


cdef class _Stream:
    """One stream's state on our side: its outbound buffer and the header block being read."""

    cdef list out  # bytes waiting for the peer's window, oldest first
    cdef Py_ssize_t offset  # bytes of out[0] already framed
    cdef Py_ssize_t pending  # bytes in out not yet framed
    cdef bint ended  # nothing after what is in out (then the trailers, if any)
    cdef bint headers_sent  # our final header block went out
    cdef bint final_seen  # the peer's final response header block arrived (client)
    cdef bint reset  # reset by us (reset_stream) or by the peer (RST_STREAM)
    cdef bint provider  # our headers went out with a data provider (not with END_STREAM)
    cdef bint eof  # the data provider has framed its last DATA
    cdef uint32_t reset_code  # RST_STREAM to send once what was queued before it is framed
    cdef object trailers
    cdef list headers  # the header block being received
    cdef Py_ssize_t header_size
    cdef list chunks  # the DATA frame being received

    def __cinit__(self):
        self.out = []


cdef class RemoteSettings:
    """The peer's settings as nghttp2 applies them (the attributes the pool reads)."""

    cdef Connection conn

    def __cinit__(self, Connection conn):
        self.conn = conn

    @property
    def max_concurrent_streams(self):
        return nghttp2_session_get_remote_settings(self.conn.session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)


cdef nghttp2_nv* _nva(list headers) except NULL:
    """``headers`` as an nghttp2_nv array pointing into the list's bytes (nghttp2 copies them)."""
    cdef Py_ssize_t n = len(headers), i
    cdef nghttp2_nv* nva = <nghttp2_nv*>malloc(max(n, 1) * sizeof(nghttp2_nv))
    if nva == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            field = headers[i]
            name = <bytes?>field[0]
            value = <bytes?>field[1]
            nva[i].name = <uint8_t*>PyBytes_AS_STRING(name)
            nva[i].namelen = PyBytes_GET_SIZE(name)
            nva[i].value = <uint8_t*>PyBytes_AS_STRING(value)
            nva[i].valuelen = PyBytes_GET_SIZE(value)
            nva[i].flags = NGHTTP2_NV_FLAG_NO_INDEX if type(field) is NeverIndexedHeaderTuple else NGHTTP2_NV_FLAG_NONE
    except BaseException:
        free(nva)
        raise
    return nva


cdef int _fail(Connection conn, BaseException exc) noexcept:
    if conn.error is None:
        conn.error = exc
    return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _on_begin_headers(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    cdef _Stream st
    try:
        sid = frame.hd.stream_id
        st = conn.streams.get(sid)
        if st is None:
            st = _Stream()
            conn.streams[sid] = st
        st.headers = []
        st.header_size = 0
    except BaseException as exc:
        return _fail(conn, exc)
    return 0


cdef int _on_header(
    nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
    const uint8_t* value, size_t valuelen, uint8_t flags, void* user_data
) noexcept:
    cdef Connection conn = <Connection>user_data
    cdef _Stream st
    try:
        st = conn.streams[frame.hd.stream_id]
        st.header_size += namelen + valuelen + 32
        if len(st.headers) >= conn.max_headers:
            return _fail(conn, DenialOfServiceError(f"Oversized header block: more than {conn.max_headers} header fields"))
        if st.header_size > conn.max_header_list:
            limit = conn.max_header_list
            return _fail(conn, DenialOfServiceError(f"Oversized header block: a header list larger than {limit} bytes"))
        n = PyBytes_FromStringAndSize(<const char*>name, namelen)
        v = PyBytes_FromStringAndSize(<const char*>value, valuelen)
        st.headers.append(NeverIndexedHeaderTuple(n, v) if flags & NGHTTP2_NV_FLAG_NO_INDEX else (n, v))
    except BaseException as exc:
        return _fail(conn, exc)
    return 0


cdef int _on_data_chunk(
    nghttp2_session* session, uint8_t flags, int32_t stream_id, const uint8_t* data, size_t length, void* user_data
) noexcept:
    cdef Connection conn = <Connection>user_data
    cdef _Stream st
    try:
        st = conn.streams.get(stream_id)
        if st is not None:
            chunk = PyBytes_FromStringAndSize(<const char*>data, length)
            if st.chunks is None:
                st.chunks = [chunk]
            else:
                st.chunks.append(chunk)
    except BaseException as exc:
        return _fail(conn, exc)
    return 0


cdef int _on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    try:
        conn.frame_received(frame)
    except BaseException as exc:
        return _fail(conn, exc)
    return 0


cdef int _on_frame_send(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    if frame.hd.type == NGHTTP2_GOAWAY and frame.goaway.error_code != 0:
        conn.goaway_error_sent = frame.goaway.error_code
    return 0


cdef int _on_invalid_frame(nghttp2_session* session, const nghttp2_frame* frame, int lib_error, void* user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    if lib_error == NGHTTP2_ERR_HTTP_HEADER or lib_error == NGHTTP2_ERR_HTTP_MESSAGING:
        # A header block or message HTTP/2 forbids: h2's inbound validation makes that a
        # connection error, and the handlers (and their stats) expect it as one.
        return _fail(conn, ProtocolError(f"nghttp2: {nghttp2_strerror(lib_error).decode()}"))
    conn.invalid = lib_error  # the reason, should nghttp2 end the connection for it
    return 0


cdef int _on_stream_close(nghttp2_session* session, int32_t stream_id, uint32_t error_code, void* user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    cdef _Stream st
    try:
        st = conn.streams.pop(stream_id, None)
        if st is None:
            return 0
        conn.pending_total -= st.pending
        # nghttp2 reset the stream for the peer's error (h2 reports these as StreamReset too);
        # streams a GOAWAY cut off are the handler's to retry, from ConnectionTerminated.
        if error_code and not st.reset and not (conn.goaway_received and stream_id > conn.goaway_last):
            conn.events.append(ev.StreamReset(stream_id=stream_id, error_code=_error_code(error_code), remote_reset=False))
    except BaseException as exc:
        return _fail(conn, exc)
    return 0


cdef ssize_t _read_data(
    nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length, uint32_t* data_flags,
    nghttp2_data_source* source, void* user_data
) noexcept:
    """The data provider: frame what the stream's buffer holds, up to ``length`` bytes."""
    cdef Connection conn = <Connection>user_data
    cdef _Stream st = <_Stream>source.ptr
    cdef size_t n = 0, take
    cdef Py_ssize_t avail
    cdef bytes chunk
    try:
        out = st.out
        while out and n < length:
            chunk = <bytes>out[0]
            avail = PyBytes_GET_SIZE(chunk) - st.offset
            take = min(<size_t>avail, length - n)
            memcpy(buf + n, PyBytes_AS_STRING(chunk) + st.offset, take)
            n += take
            if take == <size_t>avail:
                del out[0]
                st.offset = 0
            else:
                st.offset += take
        st.pending -= n
        conn.pending_total -= n
        if not out and st.ended:
            st.eof = True
            data_flags[0] |= NGHTTP2_DATA_FLAG_EOF
            if st.trailers is not None:
                data_flags[0] |= NGHTTP2_DATA_FLAG_NO_END_STREAM
                conn.submit_trailer(stream_id, st.trailers)
            if st.reset:
                conn._check(nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, st.reset_code))
            return n
        if n == 0:
            return NGHTTP2_ERR_DEFERRED
        return n
    except BaseException as exc:
        return _fail(conn, exc)


cdef class Connection:
    """One HTTP/2 connection (client or server) on an nghttp2 session: h2's API subset."""

    cdef nghttp2_session* session
    cdef bint client
    cdef dict streams  # stream id -> _Stream, from its first header block until nghttp2 closes it
    cdef list events  # what the read being handled produced so far
    cdef object error  # raised out of receive_data once nghttp2 returns (callbacks cannot raise)
    cdef Py_ssize_t pending_total
    cdef Py_ssize_t max_header_list
    cdef Py_ssize_t max_headers
    cdef list settings
    cdef dict remote  # the peer's settings as last announced, for ChangedSetting.original_value
    cdef bytearray out
    cdef uint32_t goaway_error_sent
    cdef int invalid
    cdef bint goaway_received
    cdef int32_t goaway_last
    cdef int32_t highest_inbound  # the last stream the peer opened (h2's highest_inbound_stream_id)
    cdef readonly RemoteSettings remote_settings

    def __cinit__(self, bint client, object settings, Py_ssize_t max_header_list, Py_ssize_t max_headers):
        cdef nghttp2_session_callbacks* callbacks
        cdef nghttp2_option* option
        cdef int rv
        self.client = client
        self.streams = {}
        self.events = []
        self.settings = [(int(code), int(value)) for code, value in settings.items()]
        self.max_header_list = max_header_list
        self.max_headers = max_headers
        self.remote = dict(DEFAULT_SETTINGS)
        self.out = bytearray()
        self.remote_settings = RemoteSettings(self)
        if nghttp2_session_callbacks_new(&callbacks) != 0:
            raise MemoryError()
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, _on_begin_headers)
        nghttp2_session_callbacks_set_on_header_callback(callbacks, _on_header)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, _on_data_chunk)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, _on_frame_recv)
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, _on_frame_send)
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks, _on_invalid_frame)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, _on_stream_close)
        if nghttp2_option_new(&option) != 0:
            nghttp2_session_callbacks_del(callbacks)
            raise MemoryError()
        nghttp2_option_set_no_auto_window_update(option, 1)
        if client:
            rv = nghttp2_session_client_new2(&self.session, callbacks, <void*>self, option)
        else:
            rv = nghttp2_session_server_new2(&self.session, callbacks, <void*>self, option)
        nghttp2_option_del(option)
        nghttp2_session_callbacks_del(callbacks)
        if rv != 0:
            raise MemoryError(nghttp2_strerror(rv).decode())

    def __dealloc__(self):
        if self.session != NULL:
            nghttp2_session_del(self.session)

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data):
        """Feed bytes from the peer; the events they complete, in order (h2's classes)."""
        cdef bytes b = data if type(data) is bytes else bytes(data)
        cdef ssize_t rv
        self.events = []
        rv = nghttp2_session_mem_recv(self.session, <const uint8_t*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
        events, self.events = self.events, []
        if rv < 0:
            error, self.error = self.error, None
            if error is None:
                error = ProtocolError(f"nghttp2: {nghttp2_strerror(<int>rv).decode()}")
            elif not isinstance(error, ProtocolError):
                raise error  # a defect of ours (MemoryError, ...), not the peer's
            code = NGHTTP2_ENHANCE_YOUR_CALM if isinstance(error, DenialOfServiceError) else NGHTTP2_PROTOCOL_ERROR
            nghttp2_session_terminate_session2(self.session, self.highest_inbound, code)
            raise error
        if not self.goaway_error_sent:
            # A connection error nghttp2 found answers with GOAWAY (h2 raises instead): frame
            # what is queued now, which data_to_send returns next, to learn whether it did.
            self._drain()
            if self.goaway_error_sent:
                reason = nghttp2_strerror(self.invalid).decode() if self.invalid else "connection error"
                raise ProtocolError(f"nghttp2: {reason}")
        return events

    cdef frame_received(self, const nghttp2_frame* frame):
        cdef uint8_t kind = frame.hd.type
        cdef int32_t sid = frame.hd.stream_id
        cdef bint end = frame.hd.flags & NGHTTP2_FLAG_END_STREAM
        cdef _Stream st
        cdef size_t i
        events = self.events
        if kind == NGHTTP2_DATA:
            st = self.streams.get(sid)
            chunks = st.chunks if st is not None else None
            if chunks is None:
                data = b""
            else:
                st.chunks = None
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            event = ev.DataReceived(stream_id=sid, data=data, flow_controlled_length=frame.hd.length)
            events.append(event)
            if end:
                event.stream_ended = ev.StreamEnded(stream_id=sid)
                events.append(event.stream_ended)
        elif kind == NGHTTP2_HEADERS:
            st = self.streams[sid]
            headers, st.headers = st.headers, None
            cat = frame.headers.cat
            if cat == NGHTTP2_HCAT_REQUEST:
                self.highest_inbound = sid
                event = ev.RequestReceived(stream_id=sid, headers=headers)
            elif self.client and not st.final_seen:  # a response, or the final one after 1xx
                status = headers[0][1] if headers and headers[0][0] == b":status" else b""
                if len(status) == 3 and status[0] == 0x31:  # b"1xx"
                    events.append(ev.InformationalResponseReceived(stream_id=sid, headers=headers))
                    return
                st.final_seen = True
                event = ev.ResponseReceived(stream_id=sid, headers=headers)
            else:
                event = ev.TrailersReceived(stream_id=sid, headers=headers)
            events.append(event)
            if end:
                event.stream_ended = ev.StreamEnded(stream_id=sid)
                events.append(event.stream_ended)
        elif kind == NGHTTP2_WINDOW_UPDATE:
            events.append(ev.WindowUpdated(stream_id=sid, delta=frame.window_update.window_size_increment))
        elif kind == NGHTTP2_RST_STREAM:
            st = self.streams.get(sid)
            if st is not None:
                st.reset = True
            events.append(ev.StreamReset(stream_id=sid, error_code=_error_code(frame.rst_stream.error_code)))
        elif kind == NGHTTP2_SETTINGS:
            if frame.hd.flags & NGHTTP2_FLAG_ACK:
                events.append(ev.SettingsAcknowledged())
                return
            event = ev.RemoteSettingsChanged()
            remote = self.remote
            for i in range(frame.settings.niv):
                code = _setting_code(frame.settings.iv[i].settings_id)
                value = frame.settings.iv[i].value
                event.changed_settings[code] = ChangedSetting(code, remote.get(code), value)
                remote[code] = value
            events.append(event)
        elif kind == NGHTTP2_PING:
            ping = PyBytes_FromStringAndSize(<const char*>frame.ping.opaque_data, 8)
            if frame.hd.flags & NGHTTP2_FLAG_ACK:
                events.append(ev.PingAckReceived(ping_data=ping))
            else:
                events.append(ev.PingReceived(ping_data=ping))
        elif kind == NGHTTP2_GOAWAY:
            self.goaway_received = True
            self.goaway_last = frame.goaway.last_stream_id
            event = ev.ConnectionTerminated()
            event.error_code = _error_code(frame.goaway.error_code)
            event.last_stream_id = frame.goaway.last_stream_id
            if frame.goaway.opaque_data_len:
                event.additional_data = PyBytes_FromStringAndSize(
                    <const char*>frame.goaway.opaque_data, frame.goaway.opaque_data_len
                )
            events.append(event)

    # ------------------------------------------------------------------ sending

    cdef _drain(self):
        cdef const uint8_t* chunk
        cdef ssize_t n
        while True:
            n = nghttp2_session_mem_send(self.session, &chunk)
            if n < 0:
                error, self.error = self.error, None
                if error is not None and not isinstance(error, ProtocolError):
                    raise error
                raise ProtocolError(f"nghttp2: {nghttp2_strerror(<int>n).decode()}")
            if n == 0:
                return
            self.out += (<const char*>chunk)[:n]

    def data_to_send(self):
        """Every byte the session has to send now."""
        self._drain()
        if not self.out:
            return b""
        data = bytes(self.out)
        self.out.clear()
        return data

    def initiate_connection(self):
        """Queue our SETTINGS (after the client preface, on a client)."""
        cdef size_t n = len(self.settings), i
        cdef nghttp2_settings_entry* iv = <nghttp2_settings_entry*>malloc(max(n, 1) * sizeof(nghttp2_settings_entry))
        if iv == NULL:
            raise MemoryError()
        for i in range(n):
            iv[i].settings_id = self.settings[i][0]
            iv[i].value = self.settings[i][1]
        rv = nghttp2_submit_settings(self.session, NGHTTP2_FLAG_NONE, iv, n)
        free(iv)
        self._check(rv)

    cdef _check(self, long rv):
        if rv < 0:
            raise ProtocolError(f"nghttp2: {nghttp2_strerror(<int>rv).decode()}")

    cdef _Stream _open(self, int32_t stream_id):
        cdef _Stream st = self.streams.get(stream_id)
        if st is None or st.reset:
            raise StreamClosedError(stream_id)
        return st

    def send_headers(self, stream_id, headers, end_stream=False):
        """Request headers (client, on ``get_next_available_stream_id()``), response headers
        (server; 1xx ones stay non-final), or trailers once those went out (``end_stream``)."""
        cdef int32_t sid = stream_id
        cdef _Stream st = self.streams.get(sid)
        cdef nghttp2_data_provider provider
        cdef nghttp2_nv* nva
        cdef list fields = headers if type(headers) is list else list(headers)
        cdef long rv
        if st is None and self.client:
            if <uint32_t>sid != nghttp2_session_get_next_stream_id(self.session):
                raise ProtocolError(f"stream {sid} is not the next stream id")
            st = _Stream()
        elif st is None or st.reset:
            raise StreamClosedError(sid)
        if st.headers_sent:  # trailers: they end the stream, after what is buffered
            if not end_stream:
                raise ProtocolError("trailers must end the stream")
            st.trailers = fields
            st.ended = True
            nghttp2_session_resume_data(self.session, sid)
            return
        provider.source.ptr = <void*>st
        provider.read_callback = _read_data
        nva = _nva(fields)
        try:
            if self.client:
                rv = nghttp2_submit_request(self.session, NULL, nva, len(fields), NULL if end_stream else &provider, NULL)
                if rv > 0 and rv != sid:
                    raise ProtocolError(f"nghttp2 chose stream {rv}, not {sid}")
            else:
                status = fields[0][1] if fields and fields[0][0] == b":status" else b""
                if len(status) == 3 and status[0] == 0x31 and not end_stream:  # 1xx: not final
                    rv = nghttp2_submit_headers(self.session, NGHTTP2_FLAG_NONE, sid, NULL, nva, len(fields), NULL)
                    self._check(rv)
                    return
                rv = nghttp2_submit_response(self.session, sid, nva, len(fields), NULL if end_stream else &provider)
        finally:
            free(nva)
        self._check(rv)
        st.headers_sent = True
        st.provider = not end_stream
        st.ended = end_stream
        if self.client:
            self.streams[sid] = st

    cdef submit_trailer(self, int32_t stream_id, list trailers):
        cdef nghttp2_nv* nva = _nva(trailers)
        rv = nghttp2_submit_trailer(self.session, stream_id, nva, len(trailers))
        free(nva)
        self._check(rv)

    def send_data(self, stream_id, data, end_stream=False, pad_length=None):
        """Queue ``data`` on the stream; it is framed as the peer's windows allow."""
        cdef _Stream st = self._open(stream_id)
        cdef bytes b
        if st.ended:
            raise StreamClosedError(stream_id)
        if data:
            b = data if type(data) is bytes else bytes(data)
            st.out.append(b)
            st.pending += PyBytes_GET_SIZE(b)
            self.pending_total += PyBytes_GET_SIZE(b)
        if end_stream:
            st.ended = True
        nghttp2_session_resume_data(self.session, stream_id)

    def end_stream(self, stream_id):
        cdef _Stream st = self._open(stream_id)
        st.ended = True
        nghttp2_session_resume_data(self.session, stream_id)

    def reset_stream(self, stream_id, error_code=0):
        """RST_STREAM, after what was queued on the stream before it (h2 frames each call at
        once, so a reply's DATA and end go out before the reset that follows them)."""
        cdef _Stream st = self._open(stream_id)
        st.reset = True
        st.reset_code = int(error_code)
        if st.provider and not st.eof and (st.out or st.ended):
            nghttp2_session_resume_data(self.session, stream_id)  # the provider sends it at EOF
            return
        self.pending_total -= st.pending
        st.pending = 0
        st.out.clear()
        self._check(nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, stream_id, st.reset_code))

    def acknowledge_received_data(self, acknowledged_size, stream_id):
        """The proxy passed ``acknowledged_size`` bytes on: their window may reopen (a closed
        stream's bytes still count for the connection, as h2 counts them)."""
        self._check(nghttp2_session_consume(self.session, stream_id, acknowledged_size))

    def increment_flow_control_window(self, increment, stream_id=None):
        self._check(nghttp2_submit_window_update(self.session, NGHTTP2_FLAG_NONE, stream_id or 0, increment))

    def close_connection(self, error_code=0, additional_data=None, last_stream_id=None):
        """GOAWAY with ``error_code``, naming ``last_stream_id`` or the last stream the peer
        opened; nothing is read after it is sent."""
        last = self.highest_inbound if last_stream_id is None else last_stream_id
        self._check(nghttp2_session_terminate_session2(self.session, last, int(error_code)))

    def local_flow_control_window(self, stream_id):
        """How much DATA may be queued on the stream now: the smaller of the peer's stream and
        connection windows, less what is buffered and not yet framed."""
        cdef _Stream st = self._open(stream_id)
        cdef int32_t stream_window = nghttp2_session_get_stream_remote_window_size(self.session, stream_id)
        if stream_window < 0:  # submitted, not yet sent: nghttp2 has no stream object yet
            stream_window = nghttp2_session_get_remote_settings(self.session, SETTINGS_INITIAL_WINDOW_SIZE)
        cdef int32_t conn_window = nghttp2_session_get_remote_window_size(self.session)
        return max(0, min(stream_window - st.pending, conn_window - self.pending_total))

    def get_next_available_stream_id(self):
        return nghttp2_session_get_next_stream_id(self.session)

    @property
    def max_outbound_frame_size(self):
        return nghttp2_session_get_remote_settings(self.session, NGHTTP2_SETTINGS_MAX_FRAME_SIZE)

    @property
    def inbound_flow_control_window(self):
        return nghttp2_session_get_local_window_size(self.session)

    @property
    def highest_inbound_stream_id(self):
        return self.highest_inbound

    @property
    def highest_outbound_stream_id(self):
        cdef uint32_t following = nghttp2_session_get_next_stream_id(self.session)
        return following - 2 if following > 2 else None


def new_connection(*, client, settings, max_header_list, max_headers):
    """A client or server connection advertising ``settings`` (SETTINGS code → value), refusing a
    header block of more than ``max_header_list`` bytes (RFC 7541 §4.1) or ``max_headers`` fields."""
    return Connection(client, settings, max_header_list, max_headers)
