"""Pods on one machine: network namespaces joined by a bridge, as a test (and demo) harness.

Owns building and tearing down "pods": a hub namespace holding a bridge, one namespace per
pod with ``eth0`` (a veth to the bridge) carrying one IPv4 address in 10.213.0.0/24 and one
IPv6 ULA in fd00:213::/64 and the default routes, ``lo`` up, and ``/etc/netns/<namespace>/hosts`` (which
``ip netns exec`` binds over ``/etc/hosts``) resolving service names to their addresses, with a
``resolv.conf`` naming no reachable nameserver (pods have no DNS).
Processes run inside a pod through ``ip netns exec``, as uid/gid 1337 (the sidecar's) when
asked, via ``setpriv``. Names carry the pid and a counter, so parallel sessions and successive
test meshes never collide; nothing is created in the root namespace except the namespace
names themselves and the hosts files, and ``close`` removes all of it even after a failure
(``leftovers`` lists anything that survived). Needs root. Depends on iproute2 and setpriv.
"""

from __future__ import annotations

import itertools
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENDPOINTS = Path(__file__).with_name("endpoints.py")
NETNS_ETC = Path("/etc/netns")
PREFIX = f"mp{os.getpid()}-"
SIDECAR_UID = 1337
COMMAND_TIMEOUT = 30.0
READY_TIMEOUT = 15.0
_meshes = itertools.count()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)


def _environment() -> dict[str, str]:
    # The pod's processes import this checkout's meshproxy, never an installed one.
    return {**os.environ, "PYTHONPATH": str(REPO)}


@dataclass
class Pod:
    """One pod: a namespace, its addresses, and the processes started in it."""

    name: str
    netns: str
    ipv4: str
    ipv6: str
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def argv(self, argv: list[str], user: int | None = None) -> list[str]:
        """``argv`` run inside this pod, as ``user`` (uid and gid) when given."""
        as_user = [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
        return ["ip", "netns", "exec", self.netns, *as_user, *argv]

    def run(
        self, *argv: str, user: int | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(list(argv), user),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=check,
            env=_environment(),
        )

    def meshproxy(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """``meshproxy ARGS`` inside this pod (as root: installing rules needs it)."""
        return subprocess.run(
            self.argv([sys.executable, "-m", "meshproxy", *args]),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**_environment(), **(env or {})},
        )

    def serve(self, label: str, *ports: int, loop: str = "asyncio", user: int | None = None) -> None:
        """Start an ``endpoints.py serve`` reporter on ``ports`` and wait until it is bound."""
        proc = subprocess.Popen(
            self.argv([sys.executable, str(ENDPOINTS), "serve", label, loop, *map(str, ports)], user),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_environment(),
        )
        self.processes.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        line = proc.stdout.readline().strip() if ready else ""
        if line != "ready":
            proc.kill()
            _, err = proc.communicate(timeout=COMMAND_TIMEOUT)
            raise RuntimeError(f"{label} in pod {self.name} did not start: {line!r} {err.strip()}")

    def dial(self, host: str, port: int, user: int | None = None) -> str:
        """The line a server answers when a client in this pod connects to host:port."""
        return self.run(sys.executable, str(ENDPOINTS), "dial", host, str(port), user=user).stdout.strip()

    def save(self, command: str = "iptables-save", *args: str) -> str:
        """``iptables-save`` (or ``ip6tables-save``) here, without its timestamp comments."""
        out = self.run(command, *args).stdout
        return "\n".join(line for line in out.splitlines() if not line.startswith("#"))

    def stop(self) -> None:
        for proc in self.processes:
            proc.kill()
            proc.communicate(timeout=COMMAND_TIMEOUT)
        self.processes.clear()


class Pods:
    """A set of pods on one bridge; use as a context manager, or call ``close``."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{next(_meshes)}"
        self.hub = f"{self.tag}-hub"
        self.pods: dict[str, Pod] = {}
        try:
            _ip("netns", "add", self.hub)
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Pods:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, name: str, hosts: Mapping[str, str] | None = None) -> Pod:
        """A new pod; ``hosts`` maps service names to addresses in its /etc/hosts."""
        index = 10 + len(self.pods)
        netns = f"{self.tag}-{name}"
        pod = Pod(name=name, netns=netns, ipv4=f"10.213.0.{index}", ipv6=f"fd00:213::{index:x}")
        self.pods[name] = pod
        _ip("netns", "add", netns)
        peer = f"v{index}"
        _ip("-n", self.hub, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("-n", self.hub, "link", "set", peer, "master", "br0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "addr", "add", f"{pod.ipv4}/24", "dev", "eth0")
        _ip("-n", netns, "addr", "add", f"{pod.ipv6}/64", "dev", "eth0", "nodad")
        _ip("-n", netns, "link", "set", "eth0", "up")
        # A default route, as a pod has: a service VIP is not on the pod network, and the kernel
        # routes a connection before the nat OUTPUT rules redirect it to the sidecar.
        _ip("-n", netns, "route", "add", "default", "dev", "eth0")
        _ip("-n", netns, "-6", "route", "add", "default", "dev", "eth0")
        if hosts:
            etc = NETNS_ETC / netns
            etc.mkdir(parents=True, exist_ok=True)
            lines = ["127.0.0.1 localhost", "::1 localhost", *(f"{a} {n}" for n, a in hosts.items())]
            (etc / "hosts").write_text("\n".join(lines) + "\n")
            # No DNS server serves pods here: a resolver that asks one anyway (gRPC's c-ares
            # looks up SRV and TXT records even for a name the hosts file has) must be refused
            # at once, not time out on the host's nameserver, unreachable from the pod network.
            (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1\n")
        return pod

    def close(self) -> None:
        """Stop every process, delete every namespace and hosts file; safe to call twice."""
        for pod in self.pods.values():
            pod.stop()
        for netns in [p.netns for p in self.pods.values()] + [self.hub]:
            subprocess.run(
                ["ip", "netns", "del", netns], capture_output=True, timeout=COMMAND_TIMEOUT, check=False
            )
            shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)
        self.pods.clear()
        try:
            NETNS_ETC.rmdir()  # only when empty: another session's pods keep it
        except OSError:
            pass

    def leftovers(self) -> list[str]:
        """Namespaces or hosts files of this mesh that still exist (none after ``close``)."""
        names = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=True
        ).stdout.split()
        found = [f"namespace {n}" for n in names if n.startswith(self.tag + "-")]
        if NETNS_ETC.is_dir():
            found += [f"file {p}" for p in NETNS_ETC.iterdir() if p.name.startswith(self.tag + "-")]
        return found
