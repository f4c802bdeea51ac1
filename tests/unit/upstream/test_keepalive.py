"""upstream/keepalive.py: the gRPC keepalive the xDS cluster's tcp_keepalive becomes."""

from __future__ import annotations

from meshproxy.config.model import TcpKeepalive
from meshproxy.upstream.keepalive import grpc_keepalive_options


def test_pings_follow_keepalive_time_but_never_more_often_than_servers_accept() -> None:
    # Istio's xds-grpc cluster: keepalive_time 300.
    assert grpc_keepalive_options(TcpKeepalive(time=300)) == [
        ("grpc.keepalive_time_ms", 300_000),
        ("grpc.keepalive_timeout_ms", 75 * 9 * 1000),  # the kernel's interval x probes
    ]
    # Contour's: 3 probes, 30 s, 5 s interval: pings at the 300 s floor, 15 s to answer.
    assert grpc_keepalive_options(TcpKeepalive(3, 30, 5)) == [
        ("grpc.keepalive_time_ms", 300_000),
        ("grpc.keepalive_timeout_ms", 15_000),
    ]
    assert grpc_keepalive_options(TcpKeepalive())[0] == ("grpc.keepalive_time_ms", 7200_000)
