"""OriginalDstHosts: hosts made on demand, one per address, removed after an unused interval."""

from __future__ import annotations

import random

import pytest

from meshproxy.config.model import Cluster, OriginalDstConfig, SocketAddress
from meshproxy.stats import ClusterStats
from meshproxy.upstream.cluster import ClusterRuntime
from meshproxy.upstream.original_dst import OriginalDstHosts, parse_host


class Idle:
    closed = False

    def close(self) -> None:
        self.closed = True


def table(**config: object) -> OriginalDstHosts:
    cfg = OriginalDstConfig(**config)  # type: ignore[arg-type]
    rt = ClusterRuntime(
        Cluster("pass", "ORIGINAL_DST", (), original_dst=cfg), ClusterStats(), random.Random(1)
    )
    rt.original_dst = OriginalDstHosts(rt, cfg)
    return rt.original_dst


def test_one_host_per_address_and_the_cluster_sees_them() -> None:
    hosts = table()
    a = hosts.host_for(("10.0.0.1", 80))
    assert a is not None and a is hosts.host_for(("10.0.0.1", 80))
    b = hosts.host_for(("10.0.0.1", 81))
    assert b is not None and b is not a
    assert hosts.cluster.hosts == [a, b] and hosts.cluster.stats.membership_total == 2


def test_unrestored_is_no_host_and_the_header_only_counts_when_configured() -> None:
    header = [(b"x-envoy-original-dst-host", b"10.0.0.9:8080")]
    plain = table()
    assert plain.host_for(None, header) is None  # use_http_header off: the header is ignored
    assert plain.cluster.stats.upstream_cx_none_healthy == 1
    host = table(use_http_header=True).host_for(None, header)
    assert host is not None and host.address == SocketAddress("10.0.0.9", 8080)
    restored = table(use_http_header=True).host_for(("10.0.0.1", 80), [])
    assert restored is not None and restored.address == SocketAddress("10.0.0.1", 80)
    override = table(upstream_port_override=9000).host_for(("10.0.0.1", 80))
    assert override is not None and override.address == SocketAddress("10.0.0.1", 9000)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"10.0.0.1:80", SocketAddress("10.0.0.1", 80)),
        (b"[fd00::1]:443", SocketAddress("fd00::1", 443)),
        (b" 10.0.0.1:80 ", SocketAddress("10.0.0.1", 80)),
        (b"fd00::1:443", None),
        (b"10.0.0.1", None),
        (b"10.0.0.1:0", None),
        (b"10.0.0.1:65536", None),
        (b"example.com:80", None),
        (b"", None),
    ],
)
def test_parse_host(value: bytes, expected: SocketAddress | None) -> None:
    assert parse_host(value) == expected


def test_a_host_unused_for_a_cleanup_interval_is_removed_with_its_idle_connections() -> None:
    hosts = table(cleanup_interval=5.0)
    busy, idle, fresh = (hosts.host_for((f"10.0.0.{i}", 80)) for i in (1, 2, 3))
    assert busy is not None and idle is not None and fresh is not None
    pooled = Idle()
    idle.idle.append(pooled)  # type: ignore[arg-type]
    hosts.sweep(100.0)  # the first sweep only schedules the first cleanup
    hosts.sweep(104.9)
    assert len(hosts.hosts) == 3
    hosts.sweep(105.0)  # all three were used in this interval: kept, flags cleared
    assert len(hosts.hosts) == 3
    busy.rq_active = 1
    hosts.host_for(("10.0.0.3", 80))
    hosts.sweep(110.0)
    assert set(hosts.hosts) == {busy.address, fresh.address}  # in flight / used again are kept
    assert pooled.closed and idle.idle == [] and idle.health_status == "DRAINING" and not idle.usable
    assert hosts.cluster.hosts == [busy, fresh] and hosts.cluster.stats.membership_total == 2
    again = hosts.host_for(("10.0.0.2", 80))
    assert again is not None and again is not idle  # a new host for an address that came back
