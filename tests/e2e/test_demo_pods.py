"""``python -m controlplane.demo --pods``: the demo's mesh in pods, run as a user runs it.

The demo is a real command: it builds the pods (controlplane, web, hello v1 and v2), sends
requests by name from pod a, shifts the split with meshctl, prints its evidence and removes every
pod. Here it runs bounded, its report is read, and no namespace of its process is left; run
without root it says so and exits 2 without a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from controlplane.demo.pods import SIDECAR_UID

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300.0
WEB = "spiffe://mesh.local/ns/pods/sa/web"


def demo(*prefix: str) -> tuple[int, str, str, int]:
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "controlplane.demo", "--pods", "--requests", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(
            f"the demo did not finish in {TIMEOUT:.0f}s:\n{out[-3000:]}\n{err[-3000:]}"
        ) from None
    return proc.returncode, out, err, proc.pid


def test_the_pods_demo_shows_pq_mtls_by_name_and_leaves_no_namespace() -> None:
    code, out, err, pid = demo()
    assert code == 0, out + err
    assert "FAILED" not in out
    for check in (
        "[ok] every request answered",
        "[ok] by name, captured: every request to hello v1 (the mesh's split)",
        "[ok] after `meshctl split hello v1=0 v2=100` every request to v2",
        f"[ok] the applications saw plaintext only, and the caller {WEB} on each request",
        "[ok] sidecar to sidecar over mutual TLS with X25519MLKEM768 only",
        "[ok] every pod (namespace, hosts file) removed",
    ):
        assert check in out, out
    assert "    hello v1    20\n" in out and "    hello v2    20\n" in out
    assert f"URI={WEB}" in out  # the XFCC hello v1's application saw
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert [n for n in listed.split() if n.startswith(f"mp{pid}-")] == []
    assert list(Path("/etc/netns").glob(f"mp{pid}-*")) == []  # no hosts file either


def test_without_root_the_pods_demo_says_so_and_exits_2() -> None:
    code, out, err, _ = demo("setpriv", f"--reuid={SIDECAR_UID}", f"--regid={SIDECAR_UID}", "--clear-groups")
    assert code == 2, out + err
    assert "--pods needs root" in err and "Traceback" not in err + out
