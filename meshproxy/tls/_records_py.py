"""The record path of one TLS connection in Python: the twin of ``_records_c.pyx``.

Owns ``Records``, the calls a connection makes into OpenSSL once it is up: ciphertext in and
plaintext out (``receive``: BIO_write, SSL_read until OpenSSL wants more, then the outgoing BIO
drained of what reading made OpenSSL send: a KeyUpdate's answer, an alert), plaintext in and
ciphertext out (``encrypt``: SSL_write, then the outgoing BIO drained), and the parts alone
(``feed``, ``read``, ``write``, ``drain``) that the handshake and shutdown use. Each cffi call
here is one crossing; the compiled twin makes the same OpenSSL calls in the same order from C,
one Python call per method. Statuses are ``_openssl``'s (OK, WANT_READ, CLOSED, EOF, FAILED).

A ``Records`` holds the pyOpenSSL ``Connection`` it was made for, so the SSL object and its BIOs
live as long as it does. Depends on ``_openssl`` only; must not import asyncio or sockets.
"""

from __future__ import annotations

from typing import Any

from meshproxy.tls import _openssl


class Records:
    """One connection's SSL object and memory BIOs, as pyOpenSSL made them."""

    __slots__ = ("_bio_in", "_bio_out", "_conn", "_ssl")

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._ssl = conn._ssl
        self._bio_in = conn._into_ssl
        self._bio_out = conn._from_ssl

    def feed(self, data: bytes) -> None:
        _openssl.feed(self._bio_in, data)

    def set_eof(self) -> None:
        """The transport saw EOF: an empty incoming BIO now reads as the end of the stream."""
        _openssl.set_eof(self._bio_in)

    def read(self) -> tuple[bytes, int]:
        return _openssl.read(self._ssl)

    def receive(self, data: bytes) -> tuple[bytes, int, bytes | bytearray]:
        """Plaintext, status, and what to send; after a failure the outgoing BIO is left as it is
        (the alert goes out with the next ``drain``), as in ``encrypt``."""
        _openssl.feed(self._bio_in, data)
        plaintext, status = _openssl.read(self._ssl)
        return plaintext, status, _openssl.drain(self._bio_out) if status != _openssl.FAILED else b""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return _openssl.write(self._ssl, data)

    def drain(self) -> bytes | bytearray:
        return _openssl.drain(self._bio_out)

    def encrypt(self, data: bytes | bytearray | memoryview) -> tuple[int, bytes | bytearray]:
        """Status and what to send; after a failure the outgoing BIO is left as it is."""
        status = _openssl.write(self._ssl, data)
        return status, _openssl.drain(self._bio_out) if status == _openssl.OK else b""
