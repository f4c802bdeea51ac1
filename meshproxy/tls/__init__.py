"""TLS for meshproxy: post-quantum mutual TLS between sidecars (DESIGN decision 2, issue 3).

``policy`` decides the key-exchange groups, ``config`` holds a TLS context's configuration and
builds the OpenSSL context, ``engine`` is the sans-I/O connection, ``context`` pairs a config
with its built context and client sessions, ``transport`` is the asyncio shell, ``errors``
says why a connection failed. ``_openssl`` is the one module below pyOpenSSL.
"""

from __future__ import annotations

from meshproxy.tls.config import TlsConfig, TlsVersion, build_context
from meshproxy.tls.context import SessionCache, TlsContext
from meshproxy.tls.engine import Negotiated, TlsEngine
from meshproxy.tls.errors import TlsError
from meshproxy.tls.policy import MESH_DEFAULT, OFF, PREFERRED, REQUIRED, PqMode, PqPolicy
from meshproxy.tls.transport import TlsProtocol, TlsTransport, accept_tls, connect_tls

__all__ = [
    "MESH_DEFAULT",
    "OFF",
    "PREFERRED",
    "REQUIRED",
    "Negotiated",
    "PqMode",
    "PqPolicy",
    "SessionCache",
    "TlsConfig",
    "TlsContext",
    "TlsEngine",
    "TlsError",
    "TlsProtocol",
    "TlsTransport",
    "TlsVersion",
    "accept_tls",
    "build_context",
    "connect_tls",
]
