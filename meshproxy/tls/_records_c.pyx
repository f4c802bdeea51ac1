# cython: language_level=3, boundscheck=False, wraparound=False
"""The record path of one TLS connection in C: the compiled twin of ``_records_py.py``.

Owns the same ``Records`` as the twin, making the same OpenSSL calls in the same order, but from
C: one Python call per ``receive`` (BIO_write, SSL_read until OpenSSL wants more into one bytes
object, then the outgoing BIO drained) and per ``encrypt`` (SSL_write, then the outgoing BIO drained into one bytes
object), where the twin crosses cffi once per OpenSSL call and copies through a scratch buffer.

The OpenSSL is the one ``cryptography`` bundles and pyOpenSSL drives (DESIGN decision 2); no
second libssl is linked. Its function addresses come from cryptography's cffi ``lib`` at import,
each checked against the C type this module calls it with; a missing or different one raises
ImportError, and ``meshproxy._ext`` then selects the twin (CI requires this module to load). The
SSL and BIO pointers come from the pyOpenSSL ``Connection``, which a ``Records`` keeps alive.

The GIL is held throughout: each call is a few microseconds of AES-GCM, less than a release and
reacquire would cost, and no buffer is shared between calls. Plaintext is read straight into the
bytes object returned, sized from the ciphertext waiting (plaintext is never longer) and grown if
a record left from an earlier call adds to it. Must not import asyncio or sockets.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING
from cpython.ref cimport PyObject, Py_DECREF
from libc.limits cimport INT_MAX
from libc.stdint cimport uintptr_t

from meshproxy.tls import _openssl

cdef extern from "Python.h":
    PyObject *_new_bytes "PyBytes_FromStringAndSize"(const char *, Py_ssize_t) except NULL
    object PyBytes_FromStringAndSize(const char *, Py_ssize_t)
    int _PyBytes_Resize(PyObject **, Py_ssize_t) except -1

ctypedef int (*io_fn)(void *, void *, int) noexcept nogil  # SSL_read/SSL_write/BIO_read/BIO_write
ctypedef int (*error_fn)(void *, int) noexcept nogil  # SSL_get_error
ctypedef int (*pending_fn)(void *) noexcept nogil  # SSL_pending
ctypedef long (*mem_data_fn)(void *, char **) noexcept nogil  # BIO_get_mem_data
ctypedef void (*clear_fn)() noexcept nogil  # ERR_clear_error
ctypedef unsigned long (*peek_fn)() noexcept nogil  # ERR_peek_error

# name -> the C type cryptography's binding declares it with, which the pointer types above match.
_SIGNATURES = {
    "SSL_read": "int(*)(SSL *, void *, int)",
    "SSL_write": "int(*)(SSL *, void *, int)",
    "BIO_read": "int(*)(BIO *, void *, int)",
    "BIO_write": "int(*)(BIO *, void *, int)",
    "SSL_get_error": "int(*)(SSL *, int)",
    "SSL_pending": "int(*)(SSL *)",
    "BIO_get_mem_data": "long(*)(BIO *, char * *)",
    "ERR_clear_error": "void(*)()",
    "ERR_peek_error": "unsigned long(*)()",
}


def _function(name):
    """The address of ``name`` in the bundled OpenSSL, checked against ``_SIGNATURES``."""
    ffi, lib = _openssl.ffi, _openssl.lib
    try:
        fn = getattr(lib, name)
        declared = ffi.getctype(ffi.typeof(fn))
    except (AttributeError, TypeError) as exc:
        raise ImportError(f"meshproxy.tls._records_c: cryptography's OpenSSL binding has no {name} ({exc})")
    expected = _SIGNATURES[name]
    if declared != expected:
        raise ImportError(
            f"meshproxy.tls._records_c: cryptography declares {name} as {declared}, not {expected}"
        )
    return int(ffi.cast("uintptr_t", fn))


cdef io_fn SSL_read = <io_fn><uintptr_t>_function("SSL_read")
cdef io_fn SSL_write = <io_fn><uintptr_t>_function("SSL_write")
cdef io_fn BIO_read = <io_fn><uintptr_t>_function("BIO_read")
cdef io_fn BIO_write = <io_fn><uintptr_t>_function("BIO_write")
cdef error_fn SSL_get_error = <error_fn><uintptr_t>_function("SSL_get_error")
cdef pending_fn SSL_pending = <pending_fn><uintptr_t>_function("SSL_pending")
cdef mem_data_fn BIO_get_mem_data = <mem_data_fn><uintptr_t>_function("BIO_get_mem_data")
cdef clear_fn ERR_clear_error = <clear_fn><uintptr_t>_function("ERR_clear_error")
cdef peek_fn ERR_peek_error = <peek_fn><uintptr_t>_function("ERR_peek_error")

cdef int E_WANT_READ = _openssl.lib.SSL_ERROR_WANT_READ
cdef int E_WANT_WRITE = _openssl.lib.SSL_ERROR_WANT_WRITE
cdef int E_ZERO_RETURN = _openssl.lib.SSL_ERROR_ZERO_RETURN
cdef int E_SYSCALL = _openssl.lib.SSL_ERROR_SYSCALL
cdef int OK = _openssl.OK
cdef int WANT_READ = _openssl.WANT_READ
cdef int CLOSED = _openssl.CLOSED
cdef int EOF = _openssl.EOF
cdef int FAILED = _openssl.FAILED


_fold_failure = _openssl.fold_failure


cdef inline void _clear_errors() noexcept:
    """ERR_clear_error, as the twin calls it before each SSL call so that SSL_get_error reads this
    call's errors only; the queue is almost always empty, and peeking costs a fraction of clearing."""
    if ERR_peek_error():
        ERR_clear_error()


cdef inline void *_address(object cdata) except NULL:
    return <void *><uintptr_t>int(_openssl.ffi.cast("uintptr_t", cdata))


cdef class Records:
    """One connection's SSL object and memory BIOs, as pyOpenSSL made them."""

    cdef object _conn  # keeps the SSL object and its BIOs alive
    cdef void *ssl
    cdef void *bio_in
    cdef void *bio_out

    def __cinit__(self, conn):
        self._conn = conn
        self.ssl = _address(conn._ssl)
        self.bio_in = _address(conn._into_ssl)
        self.bio_out = _address(conn._from_ssl)

    cdef int _status(self, int ret) except -1:
        """SSL_get_error folded as ``_openssl._status`` folds it."""
        cdef int err = SSL_get_error(self.ssl, ret)
        if err == E_WANT_READ or err == E_WANT_WRITE:
            return WANT_READ
        if err == E_ZERO_RETURN:
            return CLOSED
        if err == E_SYSCALL:
            return EOF
        return _fold_failure()

    cdef int _feed(self, object data) except -1:
        cdef Py_buffer view
        cdef int n
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len > INT_MAX:
                raise OverflowError("more than 2 GiB of ciphertext in one call")
            n = BIO_write(self.bio_in, view.buf, <int>view.len) if view.len else 0
            if n != view.len:
                raise MemoryError("BIO_write failed")  # a memory BIO fails only when malloc does
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef tuple _read(self):
        cdef char *waiting
        # Plaintext is never longer than the ciphertext it came from; a record that an earlier
        # call left part-read (in OpenSSL, not the BIO) can add one record more: then it grows.
        cdef Py_ssize_t cap = BIO_get_mem_data(self.bio_in, &waiting) + SSL_pending(self.ssl) + 1024
        cdef Py_ssize_t total = 0
        cdef int n, status
        cdef PyObject *out = _new_bytes(NULL, cap)
        _clear_errors()
        try:
            while True:
                n = SSL_read(self.ssl, PyBytes_AS_STRING(<object>out) + total, <int>min(cap - total, INT_MAX))
                if n <= 0:
                    status = self._status(n)
                    break
                total += n
                if total == cap:
                    cap *= 2
                    _PyBytes_Resize(&out, cap)  # on failure it frees ``out`` and sets it to NULL
            if total:
                _PyBytes_Resize(&out, total)
                data = <object>out
            else:
                data = b""
        finally:
            if out != NULL:
                Py_DECREF(<object>out)
        return data, status

    cdef int _write(self, object data) except -1:
        cdef Py_buffer view
        cdef int ret
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len == 0:
                return OK
            if view.len > INT_MAX:
                raise OverflowError("more than 2 GiB of plaintext in one write")
            _clear_errors()
            ret = SSL_write(self.ssl, view.buf, <int>view.len)
            return OK if ret == view.len else self._status(ret)
        finally:
            PyBuffer_Release(&view)

    cdef bytes _drain(self):
        cdef char *waiting
        cdef long n = BIO_get_mem_data(self.bio_out, &waiting)
        if n <= 0:
            return b""
        out = PyBytes_FromStringAndSize(NULL, n)
        BIO_read(self.bio_out, PyBytes_AS_STRING(out), <int>n)
        return out

    def feed(self, data):
        self._feed(data)

    def set_eof(self):
        _openssl.set_eof(self._conn._into_ssl)

    def read(self):
        return self._read()

    def receive(self, data):
        self._feed(data)
        data, status = self._read()
        return data, status, self._drain() if status != FAILED else b""

    def write(self, data):
        return self._write(data)

    def drain(self):
        return self._drain()

    def encrypt(self, data):
        cdef int status = self._write(data)
        return status, self._drain() if status == OK else b""
