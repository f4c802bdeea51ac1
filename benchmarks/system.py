"""What a result must carry about the machine it came from, and how busy that machine was.

Owns: the machine facts recorded once per result file (CPU, kernel, Python, loop, meshproxy's
extension state, package and tool versions), per-core busy and steal time sampled from
``/proc/stat`` around each run (so a noisy neighbour shows up next to the figure it spoiled), and
the CPU time of the process under test. Reads only /proc and tool version banners; imports
meshproxy only to ask for its extension status, and copes when that does not exist yet.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("uvloop", "httptools", "h2", "cryptography", "pyOpenSSL", "xds-protos", "matplotlib")
_TOOLS = {"haproxy": ["haproxy", "-v"], "nginx": ["nginx", "-v"], "wrk": ["wrk", "-v"]}
_CLK_TCK = os.sysconf("SC_CLK_TCK")


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
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
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


def machine_facts() -> dict[str, Any]:
    """Facts that make two result files comparable, or say why they are not."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return {
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


def cpu_usage(before: CpuTimes, after: CpuTimes) -> list[dict[str, float]]:
    """Per core, the share of the interval spent busy and stolen by the hypervisor, in percent.

    Fields (proc(5)): user nice system idle iowait irq softirq steal guest guest_nice; guest time
    is already inside user, so the total is the first eight.
    """
    usage = []
    for old, new in zip(before, after, strict=True):
        delta = [b - a for a, b in zip(old[:8], new[:8], strict=True)]
        total = sum(delta) or 1
        user, nice, system, _idle, _iowait, irq, softirq, steal = delta
        busy = user + nice + system + irq + softirq
        usage.append({"busy_pct": round(100 * busy / total, 1), "steal_pct": round(100 * steal / total, 1)})
    return usage


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its direct children (nginx's worker), in seconds."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces; the fields after it are fixed (proc(5)).
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(entry.name) == pid or int(fields[1]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _CLK_TCK
