"""``python -m controlplane.demo --pods``: the demo's mesh in pods, with transparent sidecars.

Owns the story and the report of the pods mode; the mesh itself is ``pods_mesh.pod_mesh``
(the controlplane in its pod on TLS 15012, pod ``a`` running ``web``'s sidecar, pods ``b`` and
``c`` running ``hello`` v1 and v2 behind theirs, each sidecar uid 1337 behind ``meshproxy
iptables``). The application in pod ``a`` is plain curl calling ``http://hello:8080/`` by name;
nothing in it knows of the mesh. The report shows, as the default demo's does: which version
answered (the mesh's split, then ``meshctl split hello v1=0 v2=100`` run in the controlplane's
pod), the group of the sidecars' handshakes (hello's sidecar's inbound counters, admin in its
pod), the identities (the caller's SPIFFE ID in the XFCC the application saw) and that the
application saw no TLS. Exit codes as the default demo's: 0 all as it should be, 1 something
off (the report says what), 2 not root or the mesh did not come up (with the reason).

Must not depend on: the proxy's or the controlplane's internals (pods_mesh runs them as programs).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from controlplane.demo.evidence import PQ_GROUP
from controlplane.demo.layout import DemoError
from controlplane.demo.pods_mesh import HELLO_VIP, PodMesh, Workload, pod_mesh
from controlplane.demo.workload import HTTP_PORT

ROOT_REASON = (
    "python -m controlplane.demo --pods needs root (network namespaces, iptables); "
    "run it as root, or `make demo` for the same mesh on loopback"
)
SHIFT = ("v1=0", "v2=100")
SHIFT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Round:
    """What the application in pod a got back from ``n`` requests by name."""

    n: int
    answers: list[dict[str, Any]]
    error: str

    @property
    def versions(self) -> Counter[str]:
        return Counter(str(a["version"]) for a in self.answers)

    def vouched(self, caller: str) -> int:
        """Answers whose application saw plaintext and ``caller`` in x-forwarded-client-cert."""
        return sum(
            1
            for a in self.answers
            if a["tls_connections"] == 0
            and f"URI={caller}" in a["headers"].get("x-forwarded-client-cert", "")
        )


def _parse(stream: str) -> list[dict[str, Any]]:
    """The application's JSON answers curl printed, one a line."""
    return [json.loads(line) for line in stream.splitlines() if line.strip()]


def requests(mesh: PodMesh, n: int) -> Round:
    """``curl http://hello:8080/r[1-n]`` in pod a: ``n`` requests over one keep-alive connection."""
    done = mesh.web.pod.run(
        "curl", "-s", "--max-time", "30", f"http://hello:{HTTP_PORT}/r[1-{n}]", check=False
    )
    try:
        answers = _parse(done.stdout)
    except json.JSONDecodeError:
        answers = []
    return Round(n, answers, "" if done.returncode == 0 else f"curl exited {done.returncode} {done.stderr}")


def handshakes(workload: Workload) -> tuple[float, float]:
    """(X25519MLKEM768, X25519) handshakes on the sidecar's inbound listener."""
    pq, classic = (
        workload.stat("listener_ssl_handshakes_by_group_total", group=g, listener="virtualInbound")
        for g in (PQ_GROUP, "X25519")
    )
    return pq, classic


def _show(title: str, got: Round, caller: str) -> None:
    print(
        f"\n{title}: {got.n} requests, curl in pod a to http://hello:{HTTP_PORT}/ (the name; VIP {HELLO_VIP})"
    )
    for version, k in sorted(got.versions.items()):
        print(f"    hello {version}  {k:4d}")
    print(f"    answered {len(got.answers)} of {got.n}{', ' + got.error.strip() if got.error else ''}")
    print(f"    plaintext at the application, caller {caller} in its XFCC: {got.vouched(caller)} of them")


def _shift(mesh: PodMesh) -> str:
    """``meshctl split hello v1=0 v2=100`` in the controlplane's pod; returns once v2 answers."""
    print(f"\n$ meshctl split hello {' '.join(SHIFT)}   (in pod controlplane)")
    done = mesh.meshctl("split", "hello", *SHIFT)
    print("\n".join(f"    {line}" for line in done.stdout.rstrip().splitlines()))
    if done.returncode != 0:
        raise DemoError(f"meshctl split exited with status {done.returncode}: {done.stderr.strip()}")
    t0 = time.monotonic()
    while requests(mesh, 1).versions != Counter(v2=1):
        if time.monotonic() - t0 > SHIFT_TIMEOUT:
            raise DemoError(f"web's sidecar still did not send to v2 {SHIFT_TIMEOUT:.0f}s after the split")
        time.sleep(0.05)  # polling another pod's sidecar: no event crosses the namespaces
    return f"{time.monotonic() - t0:.2f}s"


def story(mesh: PodMesh, n: int) -> list[tuple[bool, str]]:
    """The demo in a built mesh: two rounds of requests around a live split; the checks."""
    caller, v1, v2 = mesh.web, mesh.hello["v1"], mesh.hello["v2"]
    print(f"  controlplane  pod controlplane {mesh.controlplane.ipv4}, xDS + CA over TLS on 15012")
    for w in (caller, v1, v2):
        print(f"  {w.group:12s}  pod {w.pod.name:12s} {w.pod.ipv4:12s} sidecar uid 1337, {w.identity}")
    first = requests(mesh, n)
    _show("1. traffic with the mesh's split v1=100", first, caller.identity)
    took = _shift(mesh)
    print(f"    web's sidecar sends to v2 {took} after the command")
    second = requests(mesh, n)
    _show("2. traffic after the split", second, caller.identity)
    groups = {w.group: handshakes(w) for w in (v1, v2)}
    print(
        "\nTLS between the sidecars (hello's sidecars' inbound listener virtualInbound, admin in their pods):"
    )
    for group, (pq, classic) in groups.items():
        print(f"    {group}'s sidecar: handshakes {PQ_GROUP} {pq:.0f}, X25519 {classic:.0f}")
    if first.answers:
        xfcc = first.answers[0]["headers"].get("x-forwarded-client-cert")
        print(f"    the first x-forwarded-client-cert hello v1 saw: {xfcc}")
    return [
        (
            not first.error and not second.error and len(first.answers) == len(second.answers) == n,
            "every request answered",
        ),
        (first.versions == Counter(v1=n), "by name, captured: every request to hello v1 (the mesh's split)"),
        (
            second.versions == Counter(v2=n),
            f"after `meshctl split hello {' '.join(SHIFT)}` every request to v2",
        ),
        (
            first.vouched(caller.identity) == second.vouched(caller.identity) == n,
            f"the applications saw plaintext only, and the caller {caller.identity} on each request",
        ),
        (
            all(pq >= 1 and classic == 0 for pq, classic in groups.values()),
            f"sidecar to sidecar over mutual TLS with {PQ_GROUP} only",
        ),
    ]


def run(n: int) -> int:
    """The pods demo with ``n`` requests per round; its exit code."""
    if os.geteuid() != 0:
        print(f"meshproxy demo: {ROOT_REASON}", file=sys.stderr)
        return 2
    print("meshproxy demo --pods: a controlplane and transparent sidecars in network-namespace pods")
    try:
        with pod_mesh() as mesh:
            checks = story(mesh, n)
            leftovers = mesh.pods
    except (DemoError, RuntimeError, AssertionError, OSError) as exc:
        print(f"\nmeshproxy demo --pods: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo started is stopped, every pod removed")
        return 130
    checks.append((not leftovers.leftovers(), "every pod (namespace, hosts file) removed"))
    print()
    for ok, what in checks:
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")
    return 0 if all(ok for ok, _ in checks) else 1
