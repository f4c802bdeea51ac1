"""What a result must carry about the machine it came from, and how busy that machine was.

Owns: the machine facts recorded once per result file (CPU, kernel, Python, loop, meshproxy's
extension state, package and tool versions), per-core busy and steal time sampled from
``/proc/stat`` around each run (so a noisy neighbour shows up next to the figure it spoiled), and
the CPU time of the process under test. Reads only /proc and tool version banners; imports
meshproxy only to ask for its extension status, and copes when that does not exist yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = (
    "meshproxy",
    "uvloop",
    "httptools",
    "h2",
    "cryptography",
    "pyOpenSSL",
    "xds-protos",
    "matplotlib",
)
_TOOLS = {"haproxy": ["haproxy", "-v"], "nginx": ["nginx", "-v"], "wrk": ["wrk", "-v"]}
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_QUIET: dict[str, Any] = {"capture_output": True, "text": True, "timeout": 10, "check": False}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, **_QUIET)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0].strip() if text else "unknown"


def _meshproxy_extensions() -> Any:
    try:
        from meshproxy._ext import extensions_status  # type: ignore[import-not-found]
    except ImportError as exc:
        return f"unavailable ({exc})"
    return extensions_status()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop when installed (the proxy's, DESIGN decision 3), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _revision() -> str:
    """The measured code: commit, and "+changes" when the work tree differs from it."""
    root = str(Path(__file__).resolve().parent.parent)
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], **_QUIET).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"], **_QUIET)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (head or "unknown") + ("+changes" if dirty.stdout.strip() else "")


def machine_facts() -> dict[str, Any]:
    """Facts that make two result files comparable, or say why they are not."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    loop = "asyncio" if loop_factory() is asyncio.new_event_loop else "uvloop"
    return {
        "revision": _revision(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "loop": loop,
        "meshproxy_extensions": _meshproxy_extensions(),
        "meshproxy_no_extensions_env": os.environ.get("MESHPROXY_NO_EXTENSIONS"),
        "packages": versions,
        "tools": {name: _tool_version(argv) for name, argv in _TOOLS.items()},
    }


CpuTimes = list[list[int]]
"""Per core: the jiffy counters of its ``cpuN`` line in /proc/stat."""


def cpu_times() -> CpuTimes:
    cores = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            cores.append([int(field) for field in line.split()[1:]])
    return cores


def cpu_usage(before: CpuTimes, after: CpuTimes, discount: Sequence[int] = ()) -> list[dict[str, float]]:
    """Per core, the share of the interval spent busy and stolen by the hypervisor, in percent.

    Fields (proc(5)): user nice system idle iowait irq softirq steal guest guest_nice; guest time
    is already inside user, so the total is the first eight. ``discount[i]`` ticks of core i
    (KeepAwake's spinners) count as idle.
    """
    usage = []
    for i, (old, new) in enumerate(zip(before, after, strict=True)):
        delta = [b - a for a, b in zip(old[:8], new[:8], strict=True)]
        total = sum(delta) or 1
        user, nice, system, _idle, _iowait, irq, softirq, steal = delta
        busy = max(0, user + nice + system + irq + softirq - (discount[i] if i < len(discount) else 0))
        usage.append({"busy_pct": round(100 * busy / total, 1), "steal_pct": round(100 * steal / total, 1)})
    return usage


def _ticks(stat: str) -> tuple[int, int]:
    """(parent pid, utime + stime in clock ticks) from a /proc/<pid>/stat line."""
    # The command name may contain spaces; the fields after it are fixed (proc(5)).
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its direct children (nginx's worker), in seconds."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid, used = _ticks((entry / "stat").read_text())
        except OSError:
            continue
        if int(entry.name) == pid or ppid == pid:
            ticks += used
    return ticks / _CLK_TCK


class KeepAwake:
    """Busy loops at SCHED_IDLE priority, one per core, so that no vCPU ever halts while measuring.

    Why: on KVM an idle vCPU halts and the host deschedules it; waking it for the next packet can
    take milliseconds on a busy host. Measured here, serial requests through haproxy (crossing both
    cores) had p99 3.7 ms and 6,100 req/s; with both cores kept awake, p99 0.078 ms and 18,500
    req/s. SCHED_IDLE tasks give way to any normal task at once, so the cost is a context switch.
    ``ticks()`` is their CPU time per core, which cpu_usage discounts.
    """

    def __init__(self, cores: Sequence[int]) -> None:
        self.cores = list(cores)
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> KeepAwake:
        for core in self.cores:
            argv = ["chrt", "--idle", "0", "taskset", "-c", str(core), "sh", "-c", "while :; do :; done"]
            self.procs.append(subprocess.Popen(argv))
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()

    def ticks(self) -> list[int]:
        per_core = [0] * (max(self.cores, default=-1) + 1)
        for core, proc in zip(self.cores, self.procs, strict=True):
            with contextlib.suppress(OSError):  # the spinner ended: it used no more
                per_core[core] += _ticks(Path(f"/proc/{proc.pid}/stat").read_text())[1]
        return per_core
