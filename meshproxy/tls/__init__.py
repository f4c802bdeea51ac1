"""TLS for meshproxy: post-quantum mutual TLS between sidecars (DESIGN decision 2, issue 3).

``policy`` decides the key-exchange groups, ``config`` holds a TLS context's configuration,
``build`` builds the OpenSSL context from it, ``engine`` is the sans-I/O connection, ``context``
pairs a config with its built context and client sessions, ``transport`` is the asyncio shell,
``errors`` says why a connection failed. ``_openssl`` is the one module below pyOpenSSL.

The names below are loaded on first use (PEP 562), not when the package is: the config compiler
and the runtime reach ``config``, ``policy`` and ``errors`` for every bootstrap, and only a
configuration with TLS should pay for pyOpenSSL and cryptography (about 10 MiB resident,
docs/memory.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshproxy.tls.build import build_context
    from meshproxy.tls.config import TlsConfig, TlsVersion
    from meshproxy.tls.context import SessionCache, TlsContext
    from meshproxy.tls.engine import Negotiated, TlsEngine
    from meshproxy.tls.errors import TlsError
    from meshproxy.tls.policy import MESH_DEFAULT, OFF, PREFERRED, REQUIRED, PqMode, PqPolicy
    from meshproxy.tls.transport import TlsProtocol, TlsTransport, accept_tls, connect_tls

_WHERE = {
    "build_context": "build",
    "TlsConfig": "config",
    "TlsVersion": "config",
    "SessionCache": "context",
    "TlsContext": "context",
    "Negotiated": "engine",
    "TlsEngine": "engine",
    "TlsError": "errors",
    "MESH_DEFAULT": "policy",
    "OFF": "policy",
    "PREFERRED": "policy",
    "REQUIRED": "policy",
    "PqMode": "policy",
    "PqPolicy": "policy",
    "TlsProtocol": "transport",
    "TlsTransport": "transport",
    "accept_tls": "transport",
    "connect_tls": "transport",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
