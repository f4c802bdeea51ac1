# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The HTTP/1.1 parsers (RFC 9112) in C: the same rules as the twin, one pass over each head.

Owns what the twin owns (``_h1_py`` requests, ``_h1_response_py`` responses, ``_h1_framing_py``
the framing both share; their docstrings state the rules, numbered, and this module follows
them line for line; the twin suite feeds both the same bytes split at random points): framing
a byte stream into messages. Here a complete head is walked once as a C buffer: ``memchr`` for
the line ends, 256-entry tables for token, target and value bytes, request field names
lower-cased straight into shared ``bytes`` (a small cache), the fields the proxy handles told
apart by length and ``memcmp``; a request's header list is built in C, a response's relayed
field lines are slices of the upstream's head; either is handed over with the rest of the head
as one object. Python is called three times per request without a body (``on_message_begin``,
``on_head``, ``on_message_complete``), twice per such response, and once per body piece.

One module of about 860 lines on purpose: ``Framer`` and its two directions share the byte
tables and the cdef helpers, which stay direct C calls only inside one extension module.
Must not import asyncio; imports only ``errors`` and the twin's messages and error mapping.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_Append
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from libc.string cimport memchr, memcmp

from meshproxy.http._h1_framing_py import FRAMING_TOO_LARGE, TOO_LARGE, TOO_MANY, bad
from meshproxy.http._h1_framing_py import codings as codings_of
from meshproxy.http._h1_response_py import _for_response, refused
from meshproxy.http.errors import MessageRefused

cdef enum:
    HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILERS, EOF_BODY, AFTER, DONE
    COMPLETE = -1
    TUNNEL = -2

cdef enum:
    K_NONE, K_HOST, K_CONNECTION, K_HOP, K_TE, K_UPGRADE, K_EXPECT, K_XRID, K_XFF, K_XFP, K_CL

cdef enum:
    MAX_CL_DIGITS = 18
    MAX_CHUNK_DIGITS = 16

# Byte classes, one table each (RFC 9110 §5.6.2 token, §5.5 field value, RFC 3986 authority).
cdef unsigned char TOKEN[256]
cdef unsigned char VALUE[256]
cdef unsigned char TARGET[256]
cdef unsigned char AUTHORITY[256]
cdef unsigned char HEX[256]
cdef unsigned char QDTEXT[256]
cdef unsigned char LOWER[256]


cdef void _tables():
    cdef int c
    for c in range(256):
        TOKEN[c] = 0
        VALUE[c] = c == 0x09 or (0x20 <= c and c != 0x7F)
        TARGET[c] = 0x21 <= c < 0x7F and c != 0x23
        AUTHORITY[c] = 0
        HEX[c] = 0
        QDTEXT[c] = c == 0x09 or c == 0x20 or c == 0x21 or (0x23 <= c <= 0x7E and c != 0x5C) or c >= 0x80
        LOWER[c] = c + 32 if 0x41 <= c <= 0x5A else c
    for c in b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
        TOKEN[c] = 1
    for c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:[]":
        AUTHORITY[c] = 1
    for c in b"0123456789abcdefABCDEF":
        HEX[c] = 1


_tables()

# Lower-cased field names seen lately, one per slot (a name's length and three of its bytes pick
# the slot): the usual few dozen names are then one shared ``bytes`` each instead of a new one
# per field per request. Names are immutable, so sharing them across connections is safe.
cdef enum:
    NAME_SLOTS = 128
    NAME_MAX = 40
cdef PyObject* NAMES[NAME_SLOTS]


cdef bytes _lowered(const unsigned char* p, Py_ssize_t n):
    cdef bytes name = PyBytes_FromStringAndSize(NULL, n)
    cdef char* out = PyBytes_AS_STRING(name)
    cdef Py_ssize_t k
    for k in range(n):
        out[k] = LOWER[p[k]]
    return name


cdef bytes _name(const unsigned char* p, Py_ssize_t n):
    """The lower-cased name ``p[:n]``, shared with the last field of that name when cached."""
    cdef unsigned int slot
    cdef PyObject* hit
    cdef bytes name
    if n > NAME_MAX:
        return _lowered(p, n)
    slot = (n * 7 + LOWER[p[0]] * 3 + LOWER[p[n - 1]] + LOWER[p[n >> 1]]) & (NAME_SLOTS - 1)
    hit = NAMES[slot]
    if hit != NULL and PyBytes_GET_SIZE(<object>hit) == n and _lower_eq(p, n, PyBytes_AS_STRING(<object>hit), n):
        return <bytes>hit
    name = _lowered(p, n)
    Py_INCREF(name)
    Py_XDECREF(NAMES[slot])
    NAMES[slot] = <PyObject*>name
    return name


cdef inline bint _is_hexdigit_colon_dot(unsigned char c):
    return HEX[c] or c == 0x3A or c == 0x2E


cdef bint _authority_ok(const unsigned char* p, Py_ssize_t n):
    """codec.authority_ok: RFC 3986 authority characters; with ``[``, ``]`` or ``:``, an
    IP-literal or a reg-name, then at most one ``:port`` of digits."""
    cdef Py_ssize_t i
    cdef bint special = False
    for i in range(n):
        if not AUTHORITY[p[i]]:
            return False
        if p[i] == 0x3A or p[i] == 0x5B or p[i] == 0x5D:
            special = True
    if not special:
        return True
    i = 0
    if p[0] == 0x5B:  # '['
        i = 1
        while i < n and _is_hexdigit_colon_dot(p[i]):
            i += 1
        if i == 1 or i >= n or p[i] != 0x5D:
            return False
        i += 1
    else:
        while i < n and p[i] != 0x5B and p[i] != 0x5D and p[i] != 0x3A:
            i += 1
    if i == n:
        return True
    if p[i] != 0x3A:
        return False
    i += 1
    while i < n:
        if not (0x30 <= p[i] <= 0x39):
            return False
        i += 1
    return True


cdef inline bint _lower_eq(const unsigned char* p, Py_ssize_t n, const char* word, Py_ssize_t wn):
    """Is ``p[:n]`` equal to the lower-case ``word`` ignoring ASCII case?"""
    cdef Py_ssize_t i
    if n != wn:
        return False
    for i in range(n):
        if LOWER[p[i]] != <unsigned char>word[i]:
            return False
    return True


cdef int _kind(const char* name, Py_ssize_t n):
    """The field kind of a lower-cased name (``_h1_py.SPECIAL``)."""
    if n == 4:
        if memcmp(name, b"host", 4) == 0:
            return K_HOST
    elif n == 2:
        if memcmp(name, b"te", 2) == 0:
            return K_HOP
    elif n == 6:
        if memcmp(name, b"expect", 6) == 0:
            return K_EXPECT
    elif n == 7:
        if memcmp(name, b"upgrade", 7) == 0:
            return K_UPGRADE
        if memcmp(name, b"trailer", 7) == 0:
            return K_HOP
    elif n == 10:
        if memcmp(name, b"connection", 10) == 0:
            return K_CONNECTION
        if memcmp(name, b"keep-alive", 10) == 0:
            return K_HOP
    elif n == 12:
        if memcmp(name, b"x-request-id", 12) == 0:
            return K_XRID
    elif n == 14:
        if memcmp(name, b"content-length", 14) == 0:
            return K_CL
        if memcmp(name, b"http2-settings", 14) == 0:
            return K_HOP
    elif n == 15:
        if memcmp(name, b"x-forwarded-for", 15) == 0:
            return K_XFF
    elif n == 16:
        if memcmp(name, b"proxy-connection", 16) == 0:
            return K_HOP
    elif n == 17:
        if memcmp(name, b"transfer-encoding", 17) == 0:
            return K_TE
        if memcmp(name, b"x-forwarded-proto", 17) == 0:
            return K_XFP
    elif n == 23:
        if memcmp(name, b"x-forwarded-client-cert", 23) == 0:
            return K_HOP
    return K_NONE


cdef Py_ssize_t _token_end(const unsigned char* p, Py_ssize_t i, Py_ssize_t n):
    cdef Py_ssize_t start = i
    while i < n and TOKEN[p[i]]:
        i += 1
    return i if i > start else -1


cdef bint _extensions_ok(const unsigned char* p, Py_ssize_t n):
    """``*( ";" token [ "=" ( token / quoted-string ) ] )``, no whitespace (RFC 9112 §7.1.1)."""
    cdef Py_ssize_t i = 0
    cdef unsigned char c
    while i < n:
        if p[i] != 0x3B:
            return False
        i = _token_end(p, i + 1, n)
        if i < 0:
            return False
        if i < n and p[i] == 0x3D:
            i += 1
            if i < n and p[i] == 0x22:
                i += 1
                while True:
                    if i >= n:
                        return False
                    c = p[i]
                    if c == 0x22:
                        i += 1
                        break
                    if c == 0x5C:
                        if i + 1 >= n or not (p[i + 1] == 0x09 or (0x20 <= p[i + 1] and p[i + 1] != 0x7F)):
                            return False
                        i += 2
                    elif QDTEXT[c]:
                        i += 1
                    else:
                        return False
            else:
                i = _token_end(p, i, n)
                if i < 0:
                    return False
    return True


cdef class RequestHead:
    """One request's head as the parser hands it over (``_h1_py`` rule 5 says what is where)."""

    cdef public bytes method, target
    cdef public bint http10, keep_alive, upgrading, expect, chunked
    cdef public list headers
    cdef public object authority, request_id, xff, xfp, upgrade
    cdef public long long content_length
    cdef public int underscores

    def __init__(self):
        self.method = b""
        self.target = b""
        self.headers = []
        self.keep_alive = True
        self.content_length = -1

    @property
    def has_body(self):
        return self.chunked or self.content_length > 0


cdef class Framer:
    """Walks one connection's bytes message by message (``_h1_framing_py.Framer``'s machine);
    ``_on_block`` is the direction's."""

    cdef object protocol, _body, _complete
    cdef Py_ssize_t limit, max_fields
    cdef bint begun
    cdef int state, after
    cdef unsigned long long remaining
    cdef bytearray buf
    cdef Py_ssize_t scanned, line_start

    def __init__(self, protocol, Py_ssize_t limit, Py_ssize_t max_fields):
        self.protocol = protocol
        self._body = protocol.on_body
        self._complete = protocol.on_message_complete
        self.limit = limit
        self.max_fields = max_fields
        self.state = HEAD
        self.buf = None

    def feed(self, bytes data):
        """Parse ``data``; returns the bytes after a head that switched protocols (perhaps
        empty), or None when all of ``data`` was HTTP/1.1."""
        cdef bytearray buf = self.buf
        if buf is not None:
            buf += data
            if self._scan(<const unsigned char*><char*>buf, len(buf), 0) < 0:
                return None
            data = bytes(buf)
            self.buf = None
        return self._run(data)

    cdef int _begin(self) except -1:
        return 0

    cdef int _on_block(self, const unsigned char* p, Py_ssize_t start, Py_ssize_t stop) except -3:
        """A complete head ``p[start:stop]``: the state its body starts in, or COMPLETE /
        TUNNEL; sets ``remaining`` for a body of known length."""
        return COMPLETE

    cdef Py_ssize_t _scan(self, const unsigned char* p, Py_ssize_t n, Py_ssize_t start) except -2:
        """Where the head, trailer section or line at ``start`` ends (after its LF), or -1."""
        cdef bint block = self.state != CHUNK_SIZE and self.state != CHUNK_END
        cdef Py_ssize_t scan = start + self.scanned
        cdef Py_ssize_t line = start + self.line_start
        cdef Py_ssize_t stop = start + self.limit
        cdef Py_ssize_t end = n if n < stop else stop
        cdef const unsigned char* lf
        while True:
            lf = NULL
            if scan < end:
                lf = <const unsigned char*>memchr(p + scan, 0x0A, end - scan)
            if lf == NULL:
                if n >= stop:
                    raise MessageRefused(431, TOO_LARGE if self.state == HEAD else FRAMING_TOO_LARGE)
                self.scanned = n - start
                self.line_start = line - start
                return -1
            i = lf - p
            if i == line or p[i - 1] != 0x0D:
                raise bad("bare LF")
            if not block or i - 1 == line:
                self.scanned = 0
                self.line_start = 0
                return i + 1
            line = scan = i + 1

    cdef object _run(self, bytes data):
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t pos = 0, end, take
        cdef int state, following
        while True:
            state = self.state
            if state == HEAD:
                while pos < n and (p[pos] == 0x0D or p[pos] == 0x0A):
                    pos += 1
                if pos == n:
                    return None
                if not self.begun:
                    self.begun = True
                    self._begin()
                end = self._scan(p, n, pos)
                if end < 0:
                    self.buf = bytearray(data[pos:])
                    return None
                self.begun = False
                following = self._on_block(p, pos, end - 4)
                pos = end
                if following == TUNNEL:
                    self.state = DONE
                    return data[pos:]
                if following == COMPLETE:
                    self.state = self.after
                    self._complete()
                else:
                    self.state = following
            elif state == BODY or state == CHUNK_DATA or state == EOF_BODY:
                if pos == n:
                    return None
                take = n - pos
                if state != EOF_BODY and self.remaining < <unsigned long long>take:
                    take = <Py_ssize_t>self.remaining
                self._body(data if take == n else data[pos:pos + take])
                pos += take
                if state != EOF_BODY:
                    self.remaining -= take
                    if not self.remaining:
                        if state == BODY:
                            self.state = self.after
                            self._complete()
                        else:
                            self.state = CHUNK_END
            elif state == AFTER:
                if pos < n:
                    raise bad("bytes after the complete response")
                return None
            elif state == DONE:
                return data[pos:]
            else:
                if pos == n:
                    return None
                if state == CHUNK_END and p[pos] != 0x0D:
                    raise bad("chunk data not followed by CRLF")
                end = self._scan(p, n, pos)
                if end < 0:
                    self.buf = bytearray(data[pos:])
                    return None
                if state == CHUNK_END:
                    if end - 2 != pos:
                        raise bad("chunk data not followed by CRLF")
                    self.state = CHUNK_SIZE
                elif state == CHUNK_SIZE:
                    self.remaining = self._chunk_size(p + pos, end - 2 - pos)
                    self.state = CHUNK_DATA if self.remaining else TRAILERS
                else:
                    self._trailers(p, pos, end - 2)
                    self.state = self.after
                    pos = end
                    self._complete()
                    continue
                pos = end

    cdef unsigned long long _chunk_size(self, const unsigned char* p, Py_ssize_t n) except? 0:
        cdef Py_ssize_t i = 0
        cdef unsigned long long size = 0
        cdef unsigned char c
        if memchr(p, 0x0D, n) != NULL:
            raise bad("bare CR")
        while i < n and HEX[p[i]]:
            c = p[i]
            size = size * 16 + (c - 0x30 if c <= 0x39 else (c | 0x20) - 0x57)
            i += 1
        if i == 0 or i > MAX_CHUNK_DIGITS:
            raise bad("invalid chunk size")
        if i < n and (p[i] != 0x3B or not _extensions_ok(p + i, n - i)):
            raise bad("invalid chunk extension" if p[i] == 0x3B else "invalid chunk size")
        return size

    cdef void _trailers(self, const unsigned char* p, Py_ssize_t start, Py_ssize_t stop) except *:
        """A trailer section without its final CRLF: validated, counted, dropped."""
        cdef Py_ssize_t count = 0, line_end, i, name_end
        cdef const unsigned char* cr
        i = start
        while i < stop:
            cr = <const unsigned char*>memchr(p + i, 0x0D, stop - i)
            line_end = stop if cr == NULL else cr - p
            if line_end < stop and p[line_end + 1] != 0x0A:
                raise bad("bare CR")
            count += 1
            if count > self.max_fields:
                raise MessageRefused(431, TOO_MANY)
            name_end = _field_name_end(p, i, line_end)
            _value_bounds(p, name_end + 1, line_end)
            i = line_end + 2


cdef class RequestParser(Framer):
    """Frames requests out of one connection's bytes (``_h1_py``'s rules)."""

    cdef object _begin_cb, _head
    cdef bint drop_underscores

    def __init__(self, protocol, Py_ssize_t limit, Py_ssize_t max_fields, bint drop_underscores):
        Framer.__init__(self, protocol, limit, max_fields)
        self.after = HEAD
        self._begin_cb = protocol.on_message_begin
        self._head = protocol.on_head
        self.drop_underscores = drop_underscores

    cdef int _begin(self) except -1:
        self._begin_cb()
        return 0

    cdef int _on_block(self, const unsigned char* p, Py_ssize_t start, Py_ssize_t stop) except -3:
        cdef RequestHead head = self._parse_head(p, start, stop)
        if self._head(head):
            self._complete()
            return TUNNEL
        if head.chunked:
            return CHUNK_SIZE
        if head.content_length > 0:
            self.remaining = head.content_length
            return BODY
        return COMPLETE

    cdef RequestHead _parse_head(self, const unsigned char* p, Py_ssize_t start, Py_ssize_t stop):
        """Parse a request head ``p[start:stop]`` (without its final CRLF CRLF)."""
        cdef RequestHead head = RequestHead.__new__(RequestHead)  # no __init__ call: set here
        cdef const unsigned char* cr = <const unsigned char*>memchr(p + start, 0x0D, stop - start)
        cdef Py_ssize_t line_end = stop if cr == NULL else cr - p
        cdef Py_ssize_t i = start, sp1, sp2
        if line_end < stop and p[line_end + 1] != 0x0A:
            raise bad("bare CR")
        # Rule 2: method SP target SP version.
        while i < line_end and TOKEN[p[i]]:
            i += 1
        sp1 = i
        if sp1 == start or sp1 >= line_end or p[sp1] != 0x20:
            raise bad("malformed request line")
        i = sp1 + 1
        while i < line_end and p[i] != 0x20:
            i += 1
        sp2 = i
        if sp2 >= line_end or memchr(p + sp2 + 1, 0x20, line_end - sp2 - 1) != NULL:
            raise bad("malformed request line")
        if line_end - sp2 - 1 != 8 or memcmp(p + sp2 + 1, b"HTTP/1.", 7) != 0 or (
            p[sp2 + 8] != 0x31 and p[sp2 + 8] != 0x30
        ):
            raise bad("unsupported HTTP version")
        head.http10 = p[sp2 + 8] == 0x30
        if sp2 == sp1 + 1:
            raise bad("malformed request target")
        for i in range(sp1 + 1, sp2):
            if not TARGET[p[i]]:
                if p[i] == 0x23:
                    raise bad("request target with a fragment")
                raise bad("malformed request target")
        head.headers = []
        head.content_length = -1
        head.method = PyBytes_FromStringAndSize(<const char*>p + start, sp1 - start)
        head.target = PyBytes_FromStringAndSize(<const char*>p + sp1 + 1, sp2 - sp1 - 1)
        if line_end < stop:
            self._fields(p, line_end + 2, stop, head)
        else:
            head.keep_alive = not head.http10
            head.upgrading = head.method == b"CONNECT"
        return head

    cdef void _fields(self, const unsigned char* p, Py_ssize_t i, Py_ssize_t stop, RequestHead head) except *:
        """Field lines ``p[i:stop]`` classified into ``head`` (``_h1_py`` rules 3 to 6)."""
        cdef Py_ssize_t count = 0, line_end, name_end, vs, ve, n, k
        cdef const unsigned char* cr
        cdef bytes name, value
        cdef char* out
        cdef int kind
        cdef list headers = head.headers
        cdef list codings = None
        cdef list named = None
        cdef object length = None
        cdef int lengths = 0
        cdef bint chunked_alone = False  # one Transfer-Encoding line, exactly "chunked"
        cdef bint close = False, keep = False, upgrade_token = False, drop = self.drop_underscores
        cdef bint underscore
        while i < stop:
            cr = <const unsigned char*>memchr(p + i, 0x0D, stop - i)
            line_end = stop if cr == NULL else cr - p
            if line_end < stop and p[line_end + 1] != 0x0A:
                raise bad("bare CR")
            count += 1
            if count > self.max_fields:
                raise MessageRefused(431, TOO_MANY)
            name_end = _field_name_end(p, i, line_end)
            vs, ve = _value_bounds(p, name_end + 1, line_end)
            n = name_end - i
            underscore = memchr(p + i, 0x5F, n) != NULL
            if underscore:
                head.underscores += 1
                if drop:
                    i = line_end + 2
                    continue
            name = _name(p + i, n)
            out = PyBytes_AS_STRING(name)
            value = PyBytes_FromStringAndSize(<const char*>p + vs, ve - vs)
            kind = K_NONE if underscore else _kind(out, n)
            if kind == K_NONE:
                PyList_Append(headers, (name, value))
            elif kind == K_HOST:
                if head.authority is not None:
                    raise bad("duplicate Host header")
                if not _authority_ok(p + vs, ve - vs):
                    raise bad("invalid Host header")
                head.authority = value.lower()
            elif kind == K_XRID:
                head.request_id = value
            elif kind == K_XFF:
                head.xff = value if head.xff is None else head.xff + b", " + value
            elif kind == K_XFP:
                head.xfp = value
            elif kind == K_CL:
                lengths += 1
                if length is None:
                    length = value
                PyList_Append(headers, (name, value))
            elif kind == K_TE:
                chunked_alone = codings is None and _lower_eq(p + vs, ve - vs, b"chunked", 7)
                if codings is None:
                    codings = []
                codings.append(value)
            elif kind == K_UPGRADE:
                head.upgrade = value
            elif kind == K_EXPECT:
                if not _lower_eq(p + vs, ve - vs, b"100-continue", 12):
                    raise bad("unsupported Expect value")
                head.expect = True
            elif kind == K_CONNECTION:
                named = _connection(p, vs, ve, named, &close, &keep, &upgrade_token)
            i = line_end + 2
        if codings is not None:
            if head.http10:
                raise bad("Transfer-Encoding in an HTTP/1.0 request")
            if length is not None:
                raise bad("Content-Length with Transfer-Encoding")
            listed = [b"chunked"] if chunked_alone else codings_of(codings)
            if listed != [b"chunked"]:
                if listed and listed[len(listed) - 1] == b"chunked":
                    raise MessageRefused(501, b"transfer codings other than chunked are not supported")
                raise bad("chunked must be the final transfer coding")
            head.chunked = True
        elif length is not None:
            if lengths > 1:
                raise bad("duplicate Content-Length")
            head.content_length = _content_length(length)
        if named is not None:
            head.headers = [h for h in headers if h[0] not in named]
        head.keep_alive = not close and (keep or not head.http10)
        head.upgrading = head.method == b"CONNECT" or (head.upgrade is not None and upgrade_token)


cdef long long _content_length(bytes value) except -1:
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value), i
    cdef long long cl = 0
    if n == 0:
        raise bad("invalid Content-Length")
    for i in range(n):
        if not (0x30 <= p[i] <= 0x39):
            raise bad("invalid Content-Length")
    if n > MAX_CL_DIGITS:
        raise bad("Content-Length over 18 digits")
    for i in range(n):
        cl = cl * 10 + (p[i] - 0x30)
    return cl


cdef Py_ssize_t _field_name_end(const unsigned char* p, Py_ssize_t i, Py_ssize_t line_end) except -1:
    """The colon after a field line's token name (rule 3)."""
    cdef Py_ssize_t start = i
    while i < line_end and TOKEN[p[i]]:
        i += 1
    if i == start or i == line_end or p[i] != 0x3A:
        if p[start] == 0x20 or p[start] == 0x09:
            raise bad("obsolete line folding")
        raise bad("invalid header field name")
    return i


cdef (Py_ssize_t, Py_ssize_t) _value_bounds(const unsigned char* p, Py_ssize_t i, Py_ssize_t line_end) except *:
    """A field value's bounds without its OWS, every byte checked (RFC 9110 §5.5)."""
    cdef Py_ssize_t k
    while i < line_end and (p[i] == 0x20 or p[i] == 0x09):
        i += 1
    while line_end > i and (p[line_end - 1] == 0x20 or p[line_end - 1] == 0x09):
        line_end -= 1
    for k in range(i, line_end):
        if not VALUE[p[k]]:
            raise bad("invalid character in a header field value")
    return i, line_end


cdef list _connection(
    const unsigned char* p, Py_ssize_t i, Py_ssize_t stop, list named, bint* close, bint* keep, bint* upgrade
):
    """The tokens of a Connection field: the ones that mean something here set their flag
    (``upgrade`` None: a response's, where ``upgrade`` and ``host`` name fields); any other
    names a field to remove, never a framing one (codec.NEVER_HOP_BY_HOP; responses:
    ``_h1_response_py._NOT_NAMED``)."""
    cdef Py_ssize_t s, e, k
    cdef bytes token
    cdef char* out
    while i <= stop:
        s = i
        while i < stop and p[i] != 0x2C:
            i += 1
        e = i
        i += 1
        while s < e and (p[s] == 0x20 or p[s] == 0x09):
            s += 1
        while e > s and (p[e - 1] == 0x20 or p[e - 1] == 0x09):
            e -= 1
        if s == e:
            continue
        if _lower_eq(p + s, e - s, b"close", 5):
            close[0] = True
        elif _lower_eq(p + s, e - s, b"keep-alive", 10):
            keep[0] = True
        elif upgrade != NULL and _lower_eq(p + s, e - s, b"upgrade", 7):
            upgrade[0] = True
        elif not (
            _lower_eq(p + s, e - s, b"content-length", 14)
            or _lower_eq(p + s, e - s, b"transfer-encoding", 17)
            or (upgrade != NULL and _lower_eq(p + s, e - s, b"host", 4))
        ):
            token = PyBytes_FromStringAndSize(NULL, e - s)
            out = PyBytes_AS_STRING(token)
            for k in range(e - s):
                out[k] = LOWER[p[s + k]]
            if named is None:
                named = []
            named.append(token)
    return named


cdef class ResponseHead:
    """A final response's head (or a 101's): ``_h1_response_py.ResponseHead``."""

    cdef public int status
    cdef public bint http10, keep_alive, chunked
    cdef public bytes lines
    cdef public long long content_length


cdef class ResponseParser(Framer):
    """Frames the response to each request on one upstream connection (``_h1_response_py``)."""

    cdef object _head
    cdef bint head_request
    cdef Py_ssize_t head_bytes

    def __init__(self, protocol, Py_ssize_t limit, Py_ssize_t max_fields):
        Framer.__init__(self, protocol, limit, max_fields)
        self.after = AFTER
        self._head = protocol.on_head

    def reset(self, bint head_request):
        """The next response answers a new request (``head_request``: its method is HEAD)."""
        self.state = HEAD
        self.buf = None
        self.scanned = self.line_start = 0
        self.head_request = head_request
        self.head_bytes = 0

    def feed(self, bytes data):
        try:
            return Framer.feed(self, data)
        except MessageRefused as exc:
            raise _for_response(exc, self.limit, self.max_fields) from None

    cdef int _on_block(self, const unsigned char* p, Py_ssize_t start, Py_ssize_t stop) except -3:
        cdef ResponseHead head
        cdef int status
        cdef bint no_body
        self.head_bytes += stop - start + 4
        if self.head_bytes > self.limit:
            raise MessageRefused(431, TOO_LARGE)
        head = self._parse_head(p, start, stop)
        status = head.status
        if status < 200 and status != 101:
            if head.content_length >= 0 or head.chunked:
                raise refused(f"interim {status} response with Content-Length or Transfer-Encoding")
            return HEAD
        no_body = self.head_request or status == 204 or status == 304
        if not no_body and not head.chunked and head.content_length < 0 and status != 101:
            head.keep_alive = False
        self.head_bytes = 0
        self._head(head)
        if status == 101:
            return TUNNEL
        if no_body:
            return COMPLETE
        if head.chunked:
            return CHUNK_SIZE
        if head.content_length > 0:
            self.remaining = head.content_length
            return BODY
        return COMPLETE if head.content_length == 0 else EOF_BODY

    cdef ResponseHead _parse_head(self, const unsigned char* p, Py_ssize_t start, Py_ssize_t stop):
        cdef ResponseHead head = ResponseHead.__new__(ResponseHead)
        cdef const unsigned char* cr = <const unsigned char*>memchr(p + start, 0x0D, stop - start)
        cdef Py_ssize_t line_end = stop if cr == NULL else cr - p
        cdef const unsigned char* sp
        cdef Py_ssize_t vend, i
        if line_end < stop and p[line_end + 1] != 0x0A:
            raise refused("bare CR")
        sp = <const unsigned char*>memchr(p + start, 0x20, line_end - start)
        vend = line_end if sp == NULL else sp - p
        if vend - start == 8 and memcmp(p + start, b"HTTP/1.1", 8) == 0:
            head.http10 = False
        elif vend - start == 8 and memcmp(p + start, b"HTTP/1.0", 8) == 0:
            head.http10 = True
        elif (
            vend - start == 8
            and memcmp(p + start, b"HTTP/", 5) == 0
            and 0x30 <= p[start + 5] <= 0x39
            and p[start + 6] == 0x2E
            and 0x30 <= p[start + 7] <= 0x39
        ):
            raise refused(f"HTTP/{chr(p[start + 5])}.{chr(p[start + 7])} is not an HTTP/1.x response")
        else:
            raise refused("malformed status line")
        i = vend + 1  # the status code
        if (
            sp == NULL
            or line_end - i < 3
            or not (0x30 <= p[i] <= 0x39 and 0x30 <= p[i + 1] <= 0x39 and 0x30 <= p[i + 2] <= 0x39)
            or (line_end - i > 3 and p[i + 3] != 0x20)
        ):
            raise refused("malformed status line")
        for k in range(i + 4, line_end):
            if not VALUE[p[k]]:
                raise refused("a control byte in the status line's reason phrase")
        head.status = (p[i] - 0x30) * 100 + (p[i + 1] - 0x30) * 10 + (p[i + 2] - 0x30)
        if not 100 <= head.status <= 599:
            raise refused(f"status {head.status} is outside 100-599")
        head.content_length = -1
        self._fields(p, line_end + 2, stop, head)
        return head

    cdef void _fields(self, const unsigned char* p, Py_ssize_t i, Py_ssize_t stop, ResponseHead head) except *:
        """Field lines ``p[i:stop]``: validated, the relayed ones kept as received."""
        cdef Py_ssize_t count = 0, line_end, name_end, vs, ve, n, run = -1, run_end = 0, first = i
        cdef const unsigned char* cr
        cdef list runs = []
        cdef list named = None
        cdef object length = None
        cdef int lengths = 0
        cdef bint close = False, keep = False, kept
        while i < stop:
            cr = <const unsigned char*>memchr(p + i, 0x0D, stop - i)
            line_end = stop if cr == NULL else cr - p
            if line_end < stop and p[line_end + 1] != 0x0A:
                raise bad("bare CR")
            count += 1
            if count > self.max_fields:
                raise MessageRefused(431, TOO_MANY)
            name_end = _field_name_end(p, i, line_end)
            vs, ve = _value_bounds(p, name_end + 1, line_end)
            n = name_end - i
            kept = False
            if _lower_eq(p + i, n, b"content-length", 14):
                lengths += 1
                if length is None:
                    length = PyBytes_FromStringAndSize(<const char*>p + vs, ve - vs)
                kept = True
            elif _lower_eq(p + i, n, b"transfer-encoding", 17):
                if head.chunked or not _lower_eq(p + vs, ve - vs, b"chunked", 7):
                    raise refused("a transfer coding other than chunked, or chunked twice")
                head.chunked = True
            elif _lower_eq(p + i, n, b"connection", 10):
                named = _connection(p, vs, ve, named, &close, &keep, NULL)
            elif not (
                _lower_eq(p + i, n, b"keep-alive", 10)
                or _lower_eq(p + i, n, b"proxy-connection", 16)
                or _lower_eq(p + i, n, b"te", 2)
                or _lower_eq(p + i, n, b"trailer", 7)
                or _lower_eq(p + i, n, b"upgrade", 7)
            ):
                kept = True
            if kept:
                if run < 0:
                    run = i
                run_end = line_end + 2  # the CRLF after the last line is the head's own
            elif run >= 0:
                runs.append(PyBytes_FromStringAndSize(<const char*>p + run, run_end - run))
                run = -1
            i = line_end + 2
        if run >= 0:
            runs.append(PyBytes_FromStringAndSize(<const char*>p + run, run_end - run))
        if head.chunked:
            if head.http10:
                raise refused("Transfer-Encoding in an HTTP/1.0 response")
            if length is not None:
                raise refused("Content-Length with Transfer-Encoding")
        elif length is not None:
            if lengths > 1:
                raise bad("duplicate Content-Length")
            head.content_length = _content_length(length)
        head.lines = b"".join(runs) if len(runs) != 1 else runs[0]
        if named is not None:  # RFC 9110 §7.6.1: rare, so done on the lines already kept
            head.lines = b"".join(
                line + b"\r\n"
                for line in head.lines[: len(head.lines) - 2].split(b"\r\n")
                if line.partition(b":")[0].lower() not in named
            ) if head.lines else b""
        head.keep_alive = not close and (keep or not head.http10)
