"""The original destination of an accepted connection that netfilter redirected.

Owns reading ``SO_ORIGINAL_DST`` (IPv4, ``linux/netfilter_ipv4.h``) and
``IP6T_SO_ORIGINAL_DST`` (IPv6, ``linux/netfilter_ipv6/ip6_tables.h``) from the connection's
conntrack entry: the address the client dialled before a ``REDIRECT`` rule sent it to this
listener, what Envoy's ``envoy.filters.listener.original_dst`` reads. Depends only on the
socket module; works on a plain socket and on the socket an asyncio or uvloop transport
exposes (``get_extra_info("socket")``).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from typing import Protocol

from meshproxy.addresses import unmapped

SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80
SOL_IP = getattr(socket, "SOL_IP", 0)
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)
_SOCKADDR_IN = 16  # family, port, 4-byte address, padding
_SOCKADDR_IN6 = 28  # family, port, flowinfo, 16-byte address, scope id
# No conntrack entry (ENOENT), no conntrack in the kernel (ENOPROTOOPT): nothing redirected it.
_NOT_TRACKED = (errno.ENOENT, errno.ENOPROTOOPT)


class AcceptedSocket(Protocol):
    """What is needed of the socket: a real one or a transport's stand-in."""

    @property
    def family(self) -> int: ...

    def getsockname(self) -> tuple[str, int] | tuple[str, int, int, int]: ...

    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...


def original_dst(sock: AcceptedSocket) -> tuple[str, int] | None:
    """(host, port) the client dialled, or None when the connection was not redirected.

    A connection with a conntrack entry but no NAT reports its own local address; that, too,
    is "not redirected". An IPv4 client on a dual-stack IPv6 socket is asked with the IPv4
    option (its conntrack entry is IPv4) and reported without the ``::ffff:`` prefix.
    """
    local_host, local_port = sock.getsockname()[:2]
    local = (unmapped(local_host), local_port)
    ipv4 = sock.family == socket.AF_INET or ipaddress.ip_address(local[0]).version == 4
    try:
        if ipv4:
            raw = sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, _SOCKADDR_IN)
            port = struct.unpack_from("!H", raw, 2)[0]
            host = socket.inet_ntop(socket.AF_INET, raw[4:8])
        else:
            raw = sock.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, _SOCKADDR_IN6)
            port = struct.unpack_from("!H", raw, 2)[0]
            host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
    except OSError as exc:
        if exc.errno in _NOT_TRACKED:
            return None
        raise
    return None if (host, port) == local else (host, port)
