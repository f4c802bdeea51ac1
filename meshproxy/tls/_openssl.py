"""Where meshproxy reaches OpenSSL below pyOpenSSL, through ``cryptography``'s binding.

Owns every direct call into the OpenSSL that ``cryptography`` bundles (DESIGN decision 2) that
its cffi ``lib`` declares: context settings pyOpenSSL has no method for (groups, signature
algorithms, write modes, private keys of types it refuses such as ML-DSA), the verify callback
that lets an engine refuse a peer *during* the handshake, the data path (BIO and record calls
into reused buffers, skipping pyOpenSSL's per-call allocations and error translation),
sessions as bytes, and the negotiated group. The few functions ``lib`` does not declare are in
``_unexported``. Pointers come from pyOpenSSL's objects (``Context._context``,
``Connection._ssl``). Depends on ``cryptography``'s binding only; must not import asyncio,
sockets or the rest of meshproxy.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Protocol

from cryptography.hazmat.bindings.openssl.binding import Binding

ffi: Any = Binding.ffi
lib: Any = Binding.lib
log = logging.getLogger("meshproxy.tls")

SSL_MODE_NO_AUTO_CHAIN = 0x8  # send the configured chain as it is, not one rebuilt from the trust store
X509_V_ERR_CERT_REJECTED = 28  # makes OpenSSL answer an identity refusal with bad_certificate

# What an SSL call left us with (SSL_get_error, folded).
OK, WANT_READ, CLOSED, EOF, FAILED = range(5)

# The per-thread SSL_read buffer: room for all the plaintext of a 256 KiB socket read (the
# most uvloop and asyncio read at once) plus records left over from the previous one, so the
# usual read is one bytes copy out of it, with no join.
READ_CHUNK = 512 * 1024


class _Scratch(threading.local):
    """Per-thread buffers: cffi releases the GIL inside SSL_read, so they cannot be shared."""

    def __init__(self) -> None:
        self.read = ffi.new("char[]", READ_CHUNK)
        self.ptr = ffi.new("char **")


_scratch = _Scratch()

# --------------------------------------------------------------------------- context settings


def set_groups(ctx: Any, groups: str) -> bool:
    """``SSL_CTX_set1_groups_list`` (the binding names it by its older alias, ``curves``)."""
    return bool(lib.SSL_CTX_set1_curves_list(ctx._context, groups.encode()))


def set_sigalgs(ctx: Any, sigalgs: str) -> bool:
    return bool(lib.SSL_CTX_set1_sigalgs_list(ctx._context, sigalgs.encode()))


def set_modes(ctx: Any) -> None:
    """Clear the partial-write mode pyOpenSSL sets: an SSL_write takes all of its data or fails.

    With a memory BIO there is nothing to block on, so a whole write never stalls; the
    moving-buffer mode lets a retried write pass a different Python buffer. The chain sent is
    the configured one: OpenSSL would otherwise append the trust anchor to a bare leaf.
    """
    lib.SSL_CTX_clear_mode(ctx._context, lib.SSL_MODE_ENABLE_PARTIAL_WRITE)
    lib.SSL_CTX_set_mode(ctx._context, lib.SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_NO_AUTO_CHAIN)


def use_private_key(ctx: Any, pkcs8_der: bytes) -> bool:
    """Install the key (any type OpenSSL knows: pyOpenSSL refuses ML-DSA) and check it
    against the certificate already installed."""
    bio = lib.BIO_new_mem_buf(ffi.from_buffer(pkcs8_der), len(pkcs8_der))
    try:
        pkey = lib.d2i_PrivateKey_bio(bio, ffi.NULL)
    finally:
        lib.BIO_free(bio)
    if pkey == ffi.NULL:
        lib.ERR_clear_error()
        return False
    try:
        ok = lib.SSL_CTX_use_PrivateKey(ctx._context, pkey) and lib.SSL_CTX_check_private_key(ctx._context)
    finally:
        lib.EVP_PKEY_free(pkey)  # the context holds its own reference
    lib.ERR_clear_error()
    return bool(ok)


# --------------------------------------------------------------------------- peer verification


class CertificateChecker(Protocol):
    def check_certificate(self, ok: bool, error: int, depth: int, der: bytes) -> bool:
        """Accept (True) or refuse one certificate of the peer's chain; ``der`` only for the leaf."""
        ...


# SSL* address -> its engine; entries leave with the engine (and so with the SSL object).
_checkers: weakref.WeakValueDictionary[int, CertificateChecker] = weakref.WeakValueDictionary()


def _verify_failed(exc_type: Any, exc: Any, tb: Any) -> int:
    log.error("TLS verify callback failed; refusing the peer", exc_info=(exc_type, exc, tb))
    return 0


@ffi.callback("int (*)(int, X509_STORE_CTX *)", onerror=_verify_failed)
def _verify(ok: int, store: Any) -> int:
    ssl = lib.X509_STORE_CTX_get_ex_data(store, lib.SSL_get_ex_data_X509_STORE_CTX_idx())
    checker = _checkers.get(int(ffi.cast("uintptr_t", ssl)))
    if checker is None:
        return 0
    depth = lib.X509_STORE_CTX_get_error_depth(store)
    der = _der(lib.X509_STORE_CTX_get_current_cert(store)) if ok and depth == 0 else b""
    if checker.check_certificate(bool(ok), lib.X509_STORE_CTX_get_error(store), depth, der):
        return 1
    if ok:
        lib.X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED)
    return 0


def _der(cert: Any) -> bytes:
    bio = lib.BIO_new(lib.BIO_s_mem())
    try:
        lib.i2d_X509_bio(bio, cert)
        n = lib.BIO_get_mem_data(bio, _scratch.ptr)
        return ffi.buffer(_scratch.ptr[0], n)[:]
    finally:
        lib.BIO_free(bio)


def set_verify(ctx: Any, mode: int) -> None:
    """Verify peers with ``mode`` and the engines' own checks (see ``watch``)."""
    lib.SSL_CTX_set_verify(ctx._context, mode, _verify)


def watch(ssl: Any, checker: CertificateChecker) -> None:
    """Route the verify callbacks of this SSL object to ``checker``."""
    _checkers[int(ffi.cast("uintptr_t", ssl))] = checker


# --------------------------------------------------------------------------- data path


def _status(ssl: Any, ret: int) -> int:
    err = lib.SSL_get_error(ssl, ret)
    if err == lib.SSL_ERROR_WANT_READ or err == lib.SSL_ERROR_WANT_WRITE:
        return WANT_READ
    if err == lib.SSL_ERROR_ZERO_RETURN:
        return CLOSED
    if err == lib.SSL_ERROR_SYSCALL:
        return EOF
    return fold_failure()


def fold_failure() -> int:
    """The status of a failed SSL call (SSL_ERROR_SSL): EOF if the peer closed without
    close_notify (an error OpenSSL 3 reports, and drops here), otherwise FAILED."""
    if lib.ERR_GET_REASON(lib.ERR_peek_error()) == lib.SSL_R_UNEXPECTED_EOF_WHILE_READING:
        lib.ERR_clear_error()
        return EOF
    return FAILED


def errors() -> list[tuple[int, str]]:
    """Drain this thread's OpenSSL error queue: (reason code, reason string), oldest first."""
    out = []
    while code := lib.ERR_get_error():
        text = lib.ERR_reason_error_string(code)
        out.append((lib.ERR_GET_REASON(code), ffi.string(text).decode() if text != ffi.NULL else ""))
    return out


def handshake(ssl: Any) -> int:
    lib.ERR_clear_error()
    ret = lib.SSL_do_handshake(ssl)
    return OK if ret == 1 else _status(ssl, ret)


def feed(bio: Any, data: bytes) -> None:
    # A memory BIO grows to take everything; it fails only when malloc does.
    if lib.BIO_write(bio, ffi.from_buffer(data), len(data)) != len(data):
        raise MemoryError("BIO_write failed")


def read(ssl: Any) -> tuple[bytes, int]:
    """All application data OpenSSL can decrypt now, and why it stopped."""
    buf = _scratch.read
    total = 0
    chunks: list[bytes] = []
    lib.ERR_clear_error()
    while True:
        n = lib.SSL_read(ssl, buf + total, READ_CHUNK - total)
        if n <= 0:
            status = _status(ssl, n)
            break
        total += n
        if total == READ_CHUNK:
            chunks.append(ffi.buffer(buf, total)[:])
            total = 0
    data = ffi.buffer(buf, total)[:] if total else b""
    if chunks:
        chunks.append(data)
        data = b"".join(chunks)
    return data, status


def write(ssl: Any, data: bytes | bytearray | memoryview) -> int:
    lib.ERR_clear_error()
    n = len(data)
    ret = lib.SSL_write(ssl, ffi.from_buffer(data), n)
    return OK if ret == n else _status(ssl, ret)


def drain(bio: Any) -> bytearray:
    """Everything waiting in the outgoing BIO, in one copy into a buffer the caller then owns."""
    n = lib.BIO_get_mem_data(bio, _scratch.ptr)
    if n <= 0:
        return bytearray()
    out = bytearray(n)
    lib.BIO_read(bio, ffi.from_buffer(out), n)
    return out


def shutdown(ssl: Any) -> None:
    """Queue close_notify (the peer's is not awaited)."""
    lib.ERR_clear_error()
    lib.SSL_shutdown(ssl)
    lib.ERR_clear_error()


def set_eof(bio: Any) -> None:
    """The transport saw EOF: an empty incoming BIO now reads as end of stream, not as "retry"."""
    lib.BIO_set_mem_eof_return(bio, 0)


def session_der(ssl: Any) -> bytes:
    """The connection's session, serialized (b"" if none).

    A copy, not a reference: OpenSSL marks the session of a connection freed without having
    sent close_notify as not resumable, and that must not spoil what a cache kept of it.
    """
    session = lib.SSL_get_session(ssl)
    if session == ffi.NULL:
        return b""
    n = lib.i2d_SSL_SESSION(session, ffi.NULL)
    buf = ffi.new("unsigned char[]", n)
    lib.i2d_SSL_SESSION(session, ffi.new("unsigned char **", buf))
    return ffi.buffer(buf, n)[:]


def set_session_der(ssl: Any, der: bytes) -> bool:
    """Offer a serialized session for resumption (False: not a session OpenSSL can read)."""
    session = lib.d2i_SSL_SESSION(ffi.NULL, ffi.new("unsigned char **", ffi.from_buffer(der)), len(der))
    if session == ffi.NULL:
        lib.ERR_clear_error()
        return False
    ok = lib.SSL_set_session(ssl, session)  # takes its own reference
    lib.SSL_SESSION_free(session)
    return bool(ok)


def session_reused(ssl: Any) -> bool:
    return bool(lib.SSL_session_reused(ssl))


def before_server_hello(ssl: Any) -> bool:
    return lib.SSL_get_current_cipher(ssl) == ffi.NULL


# --------------------------------------------------------------------------- after the handshake


def group_name(ssl: Any) -> str:
    name = lib.SSL_get0_group_name(ssl)
    return ffi.string(name).decode() if name != ffi.NULL else ""
