"""The supervisor's listener reservations (``workers/addresses.py``) on real loopback sockets."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from meshproxy.config.model import Config, Listener, SocketAddress
from meshproxy.workers.addresses import Reservations
from meshproxy.workers.worker import interned


def config(*listeners: tuple[str, int]) -> Config:
    return Config(
        listeners=tuple(Listener(name, SocketAddress("127.0.0.1", port), ()) for name, port in listeners)
    )


def reuseport_listener(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_port_0_is_resolved_once_and_workers_can_share_it() -> None:
    held = Reservations()
    try:
        first = held.resolve(config(("http", 0)))
        port = first.listeners[0].address.port
        assert port != 0
        # The same listener asked again (as the xDS client assembles it: port 0) keeps its port.
        assert held.resolve(config(("http", 0))).listeners[0].address.port == port
        assert held.resolve(first).listeners[0].address.port == port
        # Two workers bind it; the reservation itself takes no connection (it does not listen).
        w0, w1 = reuseport_listener(port), reuseport_listener(port)
        with w0, w1:
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    pass
    finally:
        held.close()


def test_an_address_someone_else_holds_is_refused_with_the_listener_named() -> None:
    held = Reservations()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(OSError, match=f'listener "b": cannot bind 127.0.0.1:{busy}'):
            held.resolve(config(("a", 0), ("b", busy)))
    assert held.resolve(config(("a", 0))).listeners[0].address.port != 0
    held.close()


def test_keep_only_releases_what_the_configuration_left() -> None:
    held = Reservations()
    resolved = held.resolve(config(("a", 0), ("b", 0)))
    port_b = resolved.listeners[1].address.port
    held.keep_only(held.resolve(config(("a", 0))))
    with socket.socket() as plain:  # no SO_REUSEPORT: only free once the reservation is gone
        plain.bind(("127.0.0.1", port_b))
    held.close()


def test_a_worker_keeps_its_listener_objects_when_the_update_leaves_them_equal() -> None:
    running = config(("a", 1000), ("b", 1001))
    update = dataclasses.replace(config(("a", 1000), ("b", 1002)), version="v2")
    applied = interned(running, update)
    assert applied.listeners[0] is running.listeners[0]
    assert applied.listeners[1] is update.listeners[1]
    assert applied.version == "v2"
