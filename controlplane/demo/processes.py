"""The demo's child processes: started, waited for, and all stopped whatever happens.

Owns the controlplane and sidecar processes of ``python -m controlplane.demo``: each writes its
output to its own log file in the work directory, runs in its own session (so a Ctrl-C in the
terminal reaches the demo alone, which then stops them in order: sidecars, then the
controlplane) and, on Linux, is killed by the kernel if the demo itself dies without cleaning
up (``PR_SET_PDEATHSIG``). Waiting is bounded and fails with a ``DemoError`` that names the
process, says whether it exited, and quotes the end of its log.

Must not depend on: the mesh config, the controlplane or the proxy's code (they are programs here).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.demo.layout import DemoError

STOP_TIMEOUT = 8.0  # per process: a sidecar drains, the controlplane closes its streams
POLL = 0.05


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6") if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: nothing here may allocate much or start anything."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the kernel kills it if the demo dies


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "    (no log)"
        return "\n".join(f"    {line}" for line in text) or "    (empty log)"

    def failure(self, what: str) -> DemoError:
        """Why the demo cannot go on: the child exited early, or ``what`` did not happen in time."""
        status = self.proc.poll()
        state = f"exited with status {status} before it was up" if status is not None else what
        return DemoError(f"{self.name} {state}. The end of {self.log}:\n{self.tail()}")


@dataclass
class Children:
    """Every process the demo started, in start order."""

    work: Path
    started: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], log_name: str) -> Child:
        log = self.work / log_name
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        child = Child(name, proc, log)
        self.started.append(child)
        return child

    async def wait_for_line(self, child: Child, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` in the child's log (it flushes each line it prints)."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            if match := regex.search(child.log.read_text(errors="replace")):
                return match
            if child.proc.poll() is not None:
                break
            await asyncio.sleep(POLL)  # polling a file: there is no event to await
        raise child.failure(f"did not come up within {timeout:.0f}s (pid {child.proc.pid})")

    async def wait_ready(self, child: Child, admin: str, timeout: float) -> None:
        """Until the sidecar's admin ``/ready`` answers 200 (its first complete xDS config is applied)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                break
            try:
                await asyncio.to_thread(fetch, f"{admin}/ready")
                return
            except OSError:  # not listening yet, or 503 until the config is complete
                await asyncio.sleep(POLL)
        raise child.failure(f"had no complete config over ADS within {timeout:.0f}s (pid {child.proc.pid})")

    def stop_all(self) -> dict[str, int]:
        """SIGTERM each, newest first, waiting for each; SIGKILL what does not stop. Exit codes."""
        codes = {}
        for child in reversed(self.started):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
                try:
                    child.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
            codes[child.name] = child.proc.returncode
        return codes


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return bytes(resp.read())


async def fetch_json(url: str) -> Any:
    return json.loads(await asyncio.to_thread(fetch, url))


async def run(argv: list[str], timeout: float = 20.0) -> tuple[int, str]:
    """A short command (meshctl): its exit status and its stdout and stderr, together."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DemoError(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")
