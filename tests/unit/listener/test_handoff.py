"""handoff_target: which listener serves a restored destination, dual-stack listeners included."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from meshproxy.config.model import Listener, SocketAddress
from meshproxy.listener.handoff import handoff_target


@dataclass
class Runtime:
    config: Listener


def runtime(host: str, port: int, *, ipv4_compat: bool = False) -> Runtime:
    return Runtime(Listener(f"{host}:{port}", SocketAddress(host, port), (), ipv4_compat=ipv4_compat))


ACCEPTING = runtime("::", 15001, ipv4_compat=True)


@pytest.mark.parametrize(
    ("listeners", "destination", "expected"),
    [
        # exact address first, then the family's wildcard
        (["10.0.0.5:9090", "0.0.0.0:9090"], ("10.0.0.5", 9090), "10.0.0.5:9090"),
        (["0.0.0.0:9090", "[::]:9090+compat"], ("10.0.0.5", 9090), "0.0.0.0:9090"),
        # an IPv4 destination, no IPv4 wildcard: a dual-stack [::] listener takes it
        (["[::]:9090+compat"], ("10.0.0.5", 9090), "[::]:9090+compat"),
        # an IPv6-only [::] listener does not take IPv4
        (["[::]:9090"], ("10.0.0.5", 9090), "accepting"),
        (["[::]:9090"], ("fd00::5", 9090), "[::]:9090"),
        (["[::]:9090+compat"], ("fd00::5", 9090), "[::]:9090+compat"),
        (["0.0.0.0:9090"], ("fd00::5", 9090), "accepting"),
        (["[::]:9091+compat"], ("10.0.0.5", 9090), "accepting"),
    ],
)
def test_handoff_target(listeners: list[str], destination: tuple[str, int], expected: str) -> None:
    named: dict[str, Runtime] = {"accepting": ACCEPTING}
    for spec in listeners:
        address, _, flag = spec.partition("+")
        host, _, port = address.rpartition(":")
        named[spec] = runtime(host.strip("[]"), int(port), ipv4_compat=flag == "compat")
    assert handoff_target(ACCEPTING, named.values(), destination) is named[expected]
