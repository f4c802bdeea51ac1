"""The pure parts of benchmarks.cost: reading /proc (a sample text, and this process's own
entries beside a real listening socket), the vCPU arithmetic, and the configs with N clusters
(meshproxy's compiled by the proxy itself)."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

from benchmarks import cost
from meshproxy.config.bootstrap import parse_bootstrap

# /proc/net/tcp as proc(5) shows it: port 0x1F90 = 8080 listening (0A), and 8080 as a remote port.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0
   1: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0
   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0
"""


def test_listening_inodes_picks_the_listening_socket_of_the_port() -> None:
    assert cost.listening_inodes(PROC_NET_TCP, 8080) == {4242}
    assert cost.listening_inodes(PROC_NET_TCP, 8081) == {4444}
    assert cost.listening_inodes(PROC_NET_TCP, 41394) == set()  # 0xA1B2 is not listening


def test_vm_rss_bytes() -> None:
    assert cost.vm_rss_bytes("Name:\tx\nVmRSS:\t   5120 kB\nThreads:\t1\n") == 5120 * 1024
    assert cost.vm_rss_bytes("Name:\tzombie\nState:\tZ\n") == 0


def test_listener_pid_and_rss_of_this_process() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert cost.listener_pid(sock.getsockname()[1]) == os.getpid()
    own = cost.vm_rss_bytes(Path("/proc/self/status").read_text())
    assert own > 0
    assert cost.tree_rss_mb(os.getpid()) >= round(own / 2**20, 1)


def test_vcpu_per_krps_is_cpu_seconds_per_thousand_requests() -> None:
    # 0.35 s of CPU for 1,000 requests in one second: Istio's Envoy figure
    assert cost.vcpu_per_krps(0.35, 1000) == 0.35
    # the rate cancels out: 2,000 req/s for 3 s at 0.7 vCPU
    assert abs(cost.vcpu_per_krps(2.1, 6000) - 0.35) < 1e-12


def test_meshproxy_config_with_clusters_compiles() -> None:
    doc = cost.meshproxy_config(10000, 10001, 10002, 3)
    config = parse_bootstrap(doc, source="bench.json")
    assert {c.name for c in config.clusters} == {"upstream", "c0", "c1", "c2"}
    routes = json.loads(doc)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    prefixes = [
        r["match"]["prefix"] for r in routes["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    ]
    assert prefixes == ["/c0/", "/c1/", "/c2/", "/"]  # the catch-all stays last


def test_haproxy_and_nginx_configs_have_a_backend_and_a_route_per_cluster() -> None:
    haproxy = cost.haproxy_config(10000, 10001, 3)
    assert re.findall(r"^backend (c\d+)$", haproxy, re.M) == ["c0", "c1", "c2"]
    assert len(re.findall(r"use_backend c\d+ if", haproxy)) == 3
    assert haproxy.index("use_backend c2") < haproxy.index("default_backend upstream")
    assert len(re.findall(r"^    server s\d+ 10\.", haproxy, re.M)) == 3 * cost.ENDPOINTS_PER_CLUSTER
    nginx = cost.nginx_config(10000, 10001, Path("/tmp/x"), 3)
    assert re.findall(r"upstream (c\d+) \{", nginx) == ["c0", "c1", "c2"]
    assert re.findall(r"location /(c\d+)/ \{ proxy_pass http://\1; \}", nginx) == ["c0", "c1", "c2"]
    assert nginx.count("{") == nginx.count("}")
