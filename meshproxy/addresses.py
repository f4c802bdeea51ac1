"""Socket addresses as the proxy reports them: an IPv4 peer of a dual-stack socket unmapped.

Owns the one rule every layer applies (listener filter-chain matching, XFF, the access log):
``::ffff:10.0.0.1`` is the IPv4 client ``10.0.0.1``, as Envoy reports it; and how an address
with its port is written (``[::1]:8080``). Pure: depends on
nothing but ``ipaddress``, so the HTTP connection manager and the listener can both use it.
"""

from __future__ import annotations

import ipaddress
from typing import Any


def unmapped(host: str) -> str:
    """``::ffff:10.0.0.1`` → ``10.0.0.1``: a v4 client accepted on a dual-stack socket."""
    address = ipaddress.ip_address(host.split("%", 1)[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped) if mapped is not None else str(address)


def host_port(host: str, port: int) -> str:
    """``host:port`` as Envoy writes an address (access log, /clusters, /listeners): an IPv6
    host in brackets, ``[::1]:8080``, so the port cannot be read as part of it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def address_of(info: Any) -> tuple[str, int]:
    """(host, port) of a sockname/peername (``("", 0)`` for none); an IPv4 peer of a
    dual-stack socket without ``::ffff:``, as Envoy reports it (and as XFF must carry it)."""
    if not info:
        return ("", 0)
    host = info[0]
    return (unmapped(host) if host.startswith("::ffff:") else host, info[1])
