"""``make demo`` runs to completion: two sidecars, PQ mTLS between them, every request answered.

Runs the demo as users do (a child process on the embedded default configuration) with a
smaller burst, and checks its report and exit status.
"""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_to_completion_over_pq_mtls() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "meshproxy.demo", "--requests", "400", "--connections", "4"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = done.stdout
    assert "400 requests over 4 keep-alive connections" in report and ", 0 failed" in report
    assert "handshakes by group {'X25519MLKEM768':" in report
    assert "peer spiffe://mesh.local/ns/demo/sa/demo" in report
    assert "meshproxy drained and exited (0)" in report
