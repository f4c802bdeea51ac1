"""A built TLS context: one ``TlsConfig``, its OpenSSL context, and the client's sessions.

Owns what is built once per config and shared by that config's connections: the pyOpenSSL
``Context`` (parsing certificates and keys costs far more than a handshake's bookkeeping, and
the server's session-ticket keys live in it) and, on the client side, the bounded cache of
resumable sessions per upstream, so that a reconnect to the same endpoint skips certificate
verification and signatures (its key exchange is still a full X25519MLKEM768: OpenSSL clients
offer only psk_dhe_ke). Runtime state: owners rebuild it when the config changes.
Must not import asyncio or sockets.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from functools import partial

from meshproxy.tls.build import build_context
from meshproxy.tls.config import TlsConfig
from meshproxy.tls.engine import TlsEngine


class SessionCache:
    """Resumable client sessions (serialized) by upstream key; the least recently stored goes first.

    Like Envoy, a session is reused for every connection to its upstream until a newer one
    replaces it (RFC 8446 §C.4 advises single use for privacy between unrelated servers;
    between sidecars of one mesh, linkability is not a secret worth the extra handshakes).
    """

    __slots__ = ("_capacity", "_sessions")

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._sessions: OrderedDict[Hashable, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, key: Hashable) -> bytes:
        return self._sessions.get(key, b"")

    def put(self, key: Hashable, session: bytes) -> None:
        sessions = self._sessions
        sessions[key] = session
        sessions.move_to_end(key)
        if len(sessions) > self._capacity:
            sessions.popitem(last=False)


class TlsContext:
    """``TlsConfig`` + ``build_context(cfg)`` (+ a ``SessionCache`` for a client)."""

    __slots__ = ("cfg", "sessions", "ssl_context")

    def __init__(self, cfg: TlsConfig, session_capacity: int = 1024) -> None:
        self.cfg = cfg
        self.ssl_context = build_context(cfg)
        self.sessions = None if cfg.server_side else SessionCache(session_capacity)

    def engine(self, server_hostname: str = "", session_key: Hashable | None = None) -> TlsEngine:
        """A new connection's engine; a client with ``session_key`` resumes and refreshes its session."""
        sessions = self.sessions
        if sessions is None or session_key is None:
            return TlsEngine(self.cfg, self.ssl_context, server_hostname=server_hostname)
        return TlsEngine(
            self.cfg,
            self.ssl_context,
            server_hostname=server_hostname,
            session=sessions.get(session_key),
            on_session=partial(sessions.put, session_key),
        )
