"""The hosts of an ORIGINAL_DST cluster: made on demand from where each connection was going.

Owns Envoy's ``OriginalDstCluster`` load balancer (``lb_policy: CLUSTER_PROVIDED``): the host of
a request is the downstream connection's original destination, restored by the listener's
original_dst filter (a connection whose local address was not restored has no host, as in
Envoy: the proxy never connects to itself); with ``use_http_header`` an
``x-envoy-original-dst-host: ip:port`` request header names it instead (an unparsable one means
no host); ``upstream_port_override`` replaces the port. One ``Host`` per address, shared by every
request to it, so its pooled connections are reused; a host nobody picked during one
``cleanup_interval`` and with no request in flight is removed, its idle connections closed
(one still in use is closed when it is released: the host is marked DRAINING).
The cluster's ``hosts`` list mirrors the table (idle sweeps, admin, membership stats see them).
Must not know about HTTP beyond the one header's name; the caller passes the header's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_address
from typing import TYPE_CHECKING

from meshproxy.config.model import OriginalDstConfig, SocketAddress
from meshproxy.upstream.cluster import Host

if TYPE_CHECKING:
    from meshproxy.upstream.cluster import ClusterRuntime

ORIGINAL_DST_HOST = b"x-envoy-original-dst-host"


def parse_host(value: bytes) -> SocketAddress | None:
    """``10.0.0.1:8080`` or ``[fd00::1]:8080`` as an address; None for anything else."""
    text = value.decode("latin-1").strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return None  # an IPv6 address needs its brackets
    try:
        return SocketAddress(str(ip_address(host)), int(port))
    except ValueError:
        return None


class OriginalDstHosts:
    """The host table of one ORIGINAL_DST cluster (``cluster.original_dst``)."""

    def __init__(self, cluster: ClusterRuntime, config: OriginalDstConfig) -> None:
        self.cluster = cluster
        self.config = config
        # Hosts carried over from a previous runtime of the cluster keep their pools.
        self.hosts: dict[SocketAddress, Host] = {h.address: h for h in cluster.hosts}
        self.used: set[SocketAddress] = set(self.hosts)
        self.next_cleanup: float | None = None

    def host_for(
        self, original: tuple[str, int] | None, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> Host | None:
        """The host for a connection whose restored destination is ``original`` (None: not
        restored), for a request with ``headers`` (lower-case names; none for tcp_proxy)."""
        config = self.config
        address: SocketAddress | None
        header = None
        if config.use_http_header:
            header = next((v for n, v in headers if n == ORIGINAL_DST_HOST), None)
        if header is not None:
            address = parse_host(header)
        elif original is not None:
            address = SocketAddress(*original)
        else:
            address = None
        if address is None:
            self.cluster.stats.upstream_cx_none_healthy += 1
            return None
        if config.upstream_port_override is not None:
            address = SocketAddress(address.host, config.upstream_port_override)
        self.used.add(address)
        host = self.hosts.get(address)
        if host is None:
            host = self.hosts[address] = Host(address, 1, "UNKNOWN", 0)
            self._publish()
        return host

    def sweep(self, now: float) -> None:
        """Called about once a second: every ``cleanup_interval``, remove the hosts not picked
        since the previous cleanup that have no request in flight."""
        if self.next_cleanup is None:
            self.next_cleanup = now + self.config.cleanup_interval
        if now < self.next_cleanup:
            return
        self.next_cleanup = now + self.config.cleanup_interval
        gone = [h for a, h in self.hosts.items() if a not in self.used and h.rq_active == 0]
        self.used.clear()
        if not gone:
            return
        for host in gone:
            del self.hosts[host.address]
            host.health_status = "DRAINING"  # a connection released to it later is closed
            for conn in host.idle:
                conn.close()
            host.idle.clear()
        self._publish()

    def _publish(self) -> None:
        cluster = self.cluster
        cluster.hosts = list(self.hosts.values())
        cluster.stats.membership_total = cluster.stats.membership_healthy = len(self.hosts)
