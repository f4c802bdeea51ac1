"""Protocol detection from a connection's first bytes (Envoy's tls_inspector / http_inspector).

Owns ``classify``: a TLS ClientHello (with its SNI and ALPN list), the HTTP/2 connection
preface (h2c prior knowledge), an HTTP/1.x request line, or opaque bytes. It needs at most
one ClientHello record (bounded by ``MAX_PEEK``) or 24 bytes of plaintext. Sans-I/O: bytes in,
a verdict out. Must not import asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_PEEK = 16 * 1024 + 5  # one TLS record; a ClientHello that does not fit is classified as TLS
_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"CONNECT ", b"OPTIONS ", b"TRACE ", b"PATCH ")


@dataclass(frozen=True, slots=True)
class Detected:
    transport_protocol: str  # "tls" or "raw_buffer"
    application_protocols: tuple[str, ...] = ()  # ALPN offered (TLS) or "h2c" / "http/1.1"
    server_name: str = ""


def classify(data: bytes) -> Detected | None:
    """The verdict on the first bytes, or None when more bytes are needed."""
    if not data:
        return None
    if data[0] == 0x16:
        return _client_hello(data)
    n = min(len(data), len(PREFACE))
    if data[:n] == PREFACE[:n]:
        return Detected("raw_buffer", ("h2c",)) if n == len(PREFACE) else None
    for method in _METHODS:
        m = min(len(data), len(method))
        if data[:m] == method[:m]:
            if m < len(method):
                return None
            return Detected("raw_buffer", ("http/1.1",))
    return Detected("raw_buffer")


def _client_hello(data: bytes) -> Detected | None:
    if len(data) < 5:
        return Detected("raw_buffer") if len(data) >= 2 and data[1] != 0x03 else None
    if data[1] != 0x03:
        return Detected("raw_buffer")
    length = int.from_bytes(data[3:5], "big")
    if len(data) < 5 + length:
        return None if 5 + length <= MAX_PEEK else Detected("tls")
    try:
        return _parse_hello(data[5 : 5 + length])
    except (IndexError, ValueError):
        return Detected("tls")


def _parse_hello(body: bytes) -> Detected:
    if body[0] != 0x01:  # handshake type client_hello
        return Detected("tls")
    end = 4 + int.from_bytes(body[1:4], "big")
    i = 4 + 2 + 32  # version, random
    i += 1 + body[i]  # session id
    i += 2 + int.from_bytes(body[i : i + 2], "big")  # cipher suites
    i += 1 + body[i]  # compression methods
    ext_end = min(end, i + 2 + int.from_bytes(body[i : i + 2], "big"))
    i += 2
    sni = ""
    alpn: list[str] = []
    while i + 4 <= ext_end:
        kind = int.from_bytes(body[i : i + 2], "big")
        size = int.from_bytes(body[i + 2 : i + 4], "big")
        ext = body[i + 4 : i + 4 + size]
        i += 4 + size
        if kind == 0:  # server_name: list length, type, name length, name
            if len(ext) >= 5 and ext[2] == 0:
                sni = ext[5 : 5 + int.from_bytes(ext[3:5], "big")].decode("ascii", "replace").lower()
        elif kind == 16:  # ALPN: list length, then length-prefixed names
            j = 2
            while j < len(ext):
                n = ext[j]
                alpn.append(ext[j + 1 : j + 1 + n].decode("ascii", "replace"))
                j += 1 + n
    return Detected("tls", tuple(alpn), sni)
