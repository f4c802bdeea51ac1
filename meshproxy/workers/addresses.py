"""The listener addresses the supervisor holds for its workers, each bound (never listening)
with SO_REUSEPORT.

Owns three things the workers cannot do alone. A listener on port 0 gets its port once, here,
and every worker binds its own SO_REUSEPORT socket to that port (as Envoy's workers do). The
bind check of an xDS update happens once, before any worker sees the update: an address that
cannot be bound refuses it (the supervisor's one NACK decision). And the port stays ours while
a worker restarts. A bound socket that does not listen is given no connections: the kernel
spreads them over the workers' listening sockets only. Must not depend on the data plane.
"""

from __future__ import annotations

import dataclasses
import socket

from meshproxy.config.model import Config, Listener, SocketAddress


class Reservations:
    def __init__(self) -> None:
        # listener name -> (address asked for, reserving socket, address resolved)
        self._held: dict[str, tuple[SocketAddress, socket.socket, SocketAddress]] = {}
        self._replaced: list[socket.socket] = []

    def resolve(self, config: Config) -> Config:
        """``config`` with each listener's port resolved, reserving the addresses not held yet;
        raises OSError naming the listener (reserving none of this call's) when one cannot be bound."""
        fresh: dict[str, tuple[SocketAddress, socket.socket, SocketAddress]] = {}
        listeners: list[Listener] = []
        try:
            for ln in config.listeners:
                held = self._held.get(ln.name)
                if held is not None and ln.address in (held[0], held[2]):
                    resolved = held[2]
                else:
                    sock = _reserve(ln)
                    resolved = SocketAddress(ln.address.host, sock.getsockname()[1])
                    fresh[ln.name] = (ln.address, sock, resolved)
                listeners.append(ln if resolved == ln.address else dataclasses.replace(ln, address=resolved))
        except OSError:
            for _, sock, _ in fresh.values():
                sock.close()
            raise
        for name, entry in fresh.items():
            old = self._held.get(name)
            if old is not None:
                self._replaced.append(old[1])
            self._held[name] = entry
        return dataclasses.replace(config, listeners=tuple(listeners))

    def keep_only(self, config: Config) -> None:
        """Release what ``config`` (resolved) no longer names, once every worker has moved on."""
        names = {ln.name for ln in config.listeners}
        for name in [n for n in self._held if n not in names]:
            self._replaced.append(self._held.pop(name)[1])
        for sock in self._replaced:
            sock.close()
        self._replaced = []

    def close(self) -> None:
        for _, sock, _ in self._held.values():
            sock.close()
        self._held = {}
        self.keep_only(Config())


def _reserve(ln: Listener) -> socket.socket:
    address = ln.address
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:  # as the workers' sockets (bind_socket): one reuseport group
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(not ln.ipv4_compat))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        where = f"{address.host}:{address.port}"
        raise OSError(exc.errno, f'listener "{ln.name}": cannot bind {where}: {exc.strerror or exc}') from exc
    return sock
