"""``make demo`` runs as users run it: a child process that starts the controlplane and three
sidecars (web's, and one in front of each hello version; SVIDs from the controlplane's CA, config
over ADS), sends traffic over PQ mTLS, shifts the split live with ``meshctl`` (after which every
request still goes over PQ mTLS, now into hello-v2's sidecar), reports, and stops everything.

The demo runs with ``--free-ports`` (a copy of the embedded default mesh on free ports) so that
it cannot collide with another test or a demo someone left running.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading

DEMO = [sys.executable, "-m", "controlplane.demo"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _section(report: str, start: str, end: str) -> str:
    return report.split(start, 1)[1].split(end, 1)[0]


def _count(section: str, version: str) -> int:
    match = re.search(rf"^\s+hello {version}\s+(\d+)\s", section, re.MULTILINE)
    assert match, section
    return int(match.group(1))


def _pids(report: str) -> list[int]:
    return [int(p) for p in re.findall(r"\bpid (\d+)", report)]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_demo_shifts_traffic_live_between_sidecars_over_pq_mtls() -> None:
    done = subprocess.run(
        [*DEMO, "--free-ports", "--requests", "200", "--connections", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    report = done.stdout
    assert done.returncode == 0, report + done.stderr

    before = _section(report, "1. traffic with the mesh's split v1=90 v2=10", "$ meshctl split")
    v1, v2 = _count(before, "v1"), _count(before, "v2")
    assert v1 + v2 == 200 and v1 > v2 > 0, before
    assert re.search(r"failed\s+0\n", before), before

    shift = _section(report, "$ meshctl split hello v1=0 v2=100", "2. traffic")
    assert "applied: version" in shift
    assert "web's sidecar applied RouteConfiguration version" in shift

    after = _section(report, "2. traffic after `meshctl split hello v1=0 v2=100`", "$ meshctl proxies")
    assert (_count(after, "v1"), _count(after, "v2")) == (0, 200), after
    assert re.search(r"failed\s+0\n", after), after

    proxies = _section(report, "$ meshctl proxies", "TLS between the sidecars")
    assert re.search(r"web-sidecar\s+web\s+sotw\s+RouteConfiguration\s+2\s+2\s+0", proxies), proxies
    for group in ("hello-v1", "hello-v2"):
        assert re.search(rf"{group}-sidecar\s+{group}\s+delta\s+Listener\s+1\s+1\s+0", proxies), proxies

    # Both versions sit behind a sidecar with hello's identity; after the shift, v2's takes it all.
    hello = "spiffe://mesh.local/ns/demo/sa/hello"
    assert len(re.findall(rf"hello-v\d sidecar\s+pid \d+\s+{hello} ", report)) == 2, report
    tls = _section(report, "TLS between the sidecars", "[ok]")
    for version, after_shift in (("v1", 0), ("v2", 200)):
        sidecar = re.search(
            rf"hello-{version}'s sidecar: handshakes by group \{{'X25519MLKEM768': [1-9]\d*\}}, "
            rf"refused 0; requests (\d+) before the shift, {after_shift} after\n",
            tls,
        )
        assert sidecar and int(sidecar.group(1)) == _count(before, version), tls
        app = re.search(
            rf"hello {version} app: (\d+) requests, \1 from spiffe://mesh.local/ns/demo/sa/web, "
            rf"{after_shift} of them after the shift\n",
            tls,
        )
        assert app and int(app.group(1)) == _count(before, version) + after_shift, tls
    assert f"By={hello};" in tls and "URI=spiffe://mesh.local/ns/demo/sa/web" in tls
    assert "[ok] after the shift all 200 requests went over PQ mTLS through hello-v2's sidecar" in report
    assert "FAILED" not in report
    stopped = "hello-v2's sidecar (0), hello-v1's sidecar (0), web's sidecar (0), the controlplane (0)"
    assert f"stopped: {stopped}" in report
    assert len(_pids(report)) == 4 and all(_gone(pid) for pid in _pids(report))


def test_ctrl_c_stops_every_process_the_demo_started() -> None:
    proc = subprocess.Popen(
        [*DEMO, "--free-ports", "--requests", "20", "--connections", "2", "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    out = ""
    try:
        assert proc.stdout is not None
        # Blocking reads, bounded by a watchdog that kills the demo (readline then returns "").
        # (A selector on the pipe would miss lines already in the text wrapper's buffer.)
        watchdog = threading.Timer(90, proc.kill)
        watchdog.start()
        try:
            while "Ctrl-C to stop" not in out:
                line = proc.stdout.readline()
                assert line, f"the demo ended before it was up:\n{out}"
                out += line
        finally:
            watchdog.cancel()
        pids = _pids(out)
        assert len(pids) == 4 and not any(_gone(pid) for pid in pids), out
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out + rest
    assert "interrupted: everything the demo started is stopped" in rest
    assert all(_gone(pid) for pid in pids), rest


def test_busy_default_ports_fail_with_a_clear_message() -> None:
    # The embedded default mesh puts web's outbound listener for hello on 127.0.0.1:18080.
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", 18080))
            holder.listen()
        except OSError:
            pass  # someone else holds it: the demo must refuse all the same
        done = subprocess.run(DEMO, capture_output=True, text=True, timeout=60, env=ENV)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "127.0.0.1:18080 (web's sidecar: the outbound listener for hello)" in done.stderr
    assert "--free-ports" in done.stderr
    assert "pid" not in done.stdout, "nothing may start when an address is taken"
