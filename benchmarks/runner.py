"""The methodology: scenarios of cases run in rotated rounds, medians with ranges, ratios paired by round.

Owns the vocabulary every scenario module uses (``Path``: a target with its upstream;
``Measurement``: one load against it; ``Comparison``: two figures set against each other), running
a scenario, and the arithmetic every figure in a report comes from. It must not know any scenario.

Method (two cores, noisy neighbours): in each of R rounds every path is started afresh, warmed up,
and measured once per measurement; the order of paths and of measurements rotates by one each
round, so slow drift of the machine does not favour whoever goes first. A figure is the median of
its rounds with their min-max; a comparison is the median (min-max) of the per-round ratios (or
differences) of two runs made in the same round, so a round that was slow for everyone cancels
out. Each run records per-core busy and steal from /proc/stat, the same for 0.3 s just before it
while our processes are idle (anyone else's load: noisy neighbours, a concurrent test run), and
the CPU time of the proxy.
Results: one JSON file per scenario run, ``<UTC timestamp>-<scenario>.json``, in the folder of
the invocation, ``results/runs/<UTC timestamp>/`` (ignored by git: a run never touches the
committed report). Publishing a run copies its files into ``results/`` (see report.publish).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path as FsPath
from typing import Any, TypeVar

from benchmarks import system, targets, wrk

RESULTS_DIR = FsPath(__file__).resolve().parent / "results"  # published results, REPORT.md
RUNS_DIR = RESULTS_DIR / "runs"  # one folder per invocation; in .gitignore
SCHEMA = 1
MAX_ERROR_SHARE = 0.01
BACKGROUND_SAMPLE_S = 0.3
T = TypeVar("T")
DEFAULT_COLUMNS = ("rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "proxy_cpu_us_per_req", "errors")


@dataclass(frozen=True, slots=True)
class Settings:
    """How long and where: chosen on the command line, recorded in the result."""

    rounds: int
    duration_s: int
    warmup_s: int
    cpu_proxy: int
    cpu_load: int
    targets: tuple[str, ...] = targets.TARGETS
    quick: bool = False
    keep_awake: bool = False  # system.KeepAwake on both cores while measuring


RunFn = Callable[[Settings, int], dict[str, Any]]
"""A measurement's body: given the settings and the port of a running path, load it, return metrics."""


@dataclass(frozen=True, slots=True)
class Path:
    """A system under test: ``target`` in front of an upstream, optionally one that stalls."""

    label: str
    target: str
    stall_ms: int = 0
    stall_every_ms: int = 0


@dataclass(frozen=True, slots=True)
class Measurement:
    """One load applied to a running path; ``run(settings, port)`` returns its metrics.

    ``kind`` "throughput" puts it in the throughput bars; every measurement with a latency
    spectrum gets a percentile plot.
    """

    name: str
    title: str
    kind: str
    run: RunFn


@dataclass(frozen=True, slots=True)
class Ref:
    path: str
    measurement: str
    metric: str


@dataclass(frozen=True, slots=True)
class Comparison:
    """``num`` set against ``den`` round by round; shown at (row, column) of the ratio or
    difference table."""

    row: str
    column: str
    num: Ref
    den: Ref
    kind: str = "ratio"  # or "diff"


@dataclass(frozen=True, slots=True)
class Timing:
    rounds: int
    duration_s: int


Start = Callable[[Path, Settings], AbstractContextManager[targets.Running]]
"""Brings a path up, warmed up, for one round's measurements, and down after them; raises
targets.TargetStartError (with the reason) when it cannot, which skips the path for the run."""


@contextlib.contextmanager
def on_loopback(path: Path, settings: Settings) -> Iterator[targets.Running]:
    """The usual start: ``targets.running`` on 127.0.0.1, then a wrk warm-up over 50 connections."""
    with targets.running(
        path.target, settings.cpu_proxy, settings.cpu_load, path.stall_ms, path.stall_every_ms
    ) as live:
        if settings.warmup_s:
            wrk.run(live.port, 50, settings.warmup_s, settings.cpu_load)
        yield live


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    paths: tuple[Path, ...]
    measurements: tuple[Measurement, ...]
    comparisons: tuple[Comparison, ...]
    quick: Timing
    full: Timing
    note: str = ""
    filter_targets: bool = True  # --targets selects among the paths
    columns: tuple[str, ...] = ()  # metrics in the report's tables; () means DEFAULT_COLUMNS
    start: Start = on_loopback  # how each path is brought up (pods: benchmarks/interception.py)


def rotate(items: Sequence[T], by: int) -> list[T]:
    if not items:
        return []
    k = by % len(items)
    return [*items[k:], *items[:k]]


def _measure(
    measurement: Measurement,
    settings: Settings,
    live: targets.Running,
    rnd: int,
    label: str,
    awake: system.KeepAwake,
) -> dict[str, Any]:
    run: dict[str, Any] = {"round": rnd, "path": label, "measurement": measurement.name}
    # Our own processes are idle now, so what keeps a core busy here is someone else's work.
    spin_before, cpu_before = awake.ticks(), system.cpu_times()
    time.sleep(BACKGROUND_SAMPLE_S)
    spun = [b - a for a, b in zip(spin_before, awake.ticks(), strict=True)]
    run["background"] = system.cpu_usage(cpu_before, system.cpu_times(), spun)
    spin_before = awake.ticks()
    cpu_before = system.cpu_times()
    proxy_before = system.process_cpu_seconds(live.proxy_pid) if live.proxy_pid else 0.0
    start = time.monotonic()
    try:
        metrics = measurement.run(settings, live.port)
    except RuntimeError as exc:
        run["error"] = str(exc)
        return run
    run["wall_s"] = round(time.monotonic() - start, 3)
    spun = [b - a for a, b in zip(spin_before, awake.ticks(), strict=True)]
    run["cpu"] = system.cpu_usage(cpu_before, system.cpu_times(), spun)
    if live.proxy_pid:
        proxy_s = system.process_cpu_seconds(live.proxy_pid) - proxy_before
        run["proxy_cpu_s"] = round(proxy_s, 3)
        if metrics.get("requests"):
            metrics["proxy_cpu_us_per_req"] = round(proxy_s * 1e6 / metrics["requests"], 2)
    run["metrics"] = metrics
    return run


def _round(
    scenario: Scenario,
    settings: Settings,
    paths: Sequence[Path],
    rnd: int,
    awake: system.KeepAwake,
    runs: list[dict[str, Any]],
    skipped: dict[str, str],
    log: Callable[[str], None],
) -> None:
    """One round: every path not yet skipped, started afresh, each measurement once."""
    for path in rotate(paths, rnd):
        if path.label in skipped:
            continue
        log(f"[{scenario.name}] round {rnd + 1}/{settings.rounds}: {path.label}")
        try:
            with scenario.start(path, settings) as live:
                for measurement in rotate(scenario.measurements, rnd):
                    run = _measure(measurement, settings, live, rnd, path.label, awake)
                    if "error" in run:
                        log(f"  {measurement.name}: failed: {run['error']}")
                    runs.append(run)
        except targets.TargetStartError as exc:
            skipped[path.label] = str(exc)
            log(f"  skipping {path.label} for the rest of this run: {str(exc).splitlines()[0]}")


def run_scenario(
    scenario: Scenario, settings: Settings, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run every round of ``scenario``; a path whose target does not start is skipped, not fatal."""
    paths = [p for p in scenario.paths if not scenario.filter_targets or p.target in settings.targets]
    started = datetime.now(UTC)
    facts = system.machine_facts()
    runs: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    awake = system.KeepAwake([settings.cpu_load, settings.cpu_proxy] if settings.keep_awake else [])
    with awake:
        for rnd in range(settings.rounds):
            _round(scenario, settings, paths, rnd, awake, runs, skipped, log)
    result = {
        "schema": SCHEMA,
        "scenario": scenario.name,
        "title": scenario.title,
        "note": scenario.note,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": asdict(settings),
        "system": facts,
        "paths": [asdict(p) for p in paths],
        "measurements": [{"name": m.name, "title": m.title, "kind": m.kind} for m in scenario.measurements],
        "columns": list(scenario.columns or DEFAULT_COLUMNS),
        "comparisons": [asdict(c) for c in scenario.comparisons],
        "skipped": skipped,
        "runs": runs,
    }
    result["comparison_results"] = compare(runs, scenario.comparisons)
    return result


def new_run_dir(now: datetime, runs_dir: FsPath = RUNS_DIR) -> FsPath:
    """A fresh folder for one invocation's results, ``<runs_dir>/<UTC stamp of now>[-n]``."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        candidate = runs_dir / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue  # two invocations within one second
        return candidate
    raise FileExistsError(f"{runs_dir}: no free run folder for {stamp}")


def write_result(result: dict[str, Any], results_dir: FsPath) -> FsPath:
    """Write atomically as ``<UTC start>-<scenario>.json``; returns the path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(result["started_at"]).strftime("%Y%m%dT%H%M%SZ")
    final = results_dir / f"{stamp}-{result['scenario']}.json"
    tmp = final.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(final)
    return final


def spread(values: Sequence[float]) -> dict[str, float | int]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every numeric metric of every (path, measurement): median and min-max over its rounds."""
    grouped: dict[tuple[str, str, str], list[float]] = {}
    for run in runs:
        for metric, value in run.get("metrics", {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                grouped.setdefault((run["path"], run["measurement"], metric), []).append(value)
    return [
        {"path": p, "measurement": m, "metric": k, **spread(values)} for (p, m, k), values in grouped.items()
    ]


def invalid_reason(run: dict[str, Any]) -> str | None:
    """Why a run must not enter comparisons or plots (None: it may): it failed, more than 1 % of
    its requests failed, or an open-loop generator did not reach its rate."""
    if "metrics" not in run:
        return run.get("error", "no metrics").splitlines()[0]
    metrics = run["metrics"]
    requests, errors = metrics.get("requests", 0), metrics.get("errors", 0)
    if errors > MAX_ERROR_SHARE * max(requests, 1):
        return f"{errors} errors in {requests} requests"
    if metrics.get("sustained") is False:
        return f"offered {metrics['target_rps']:.0f} req/s, achieved {metrics['rps']:.0f}"
    return None


def compare(
    runs: Sequence[dict[str, Any]], comparisons: Sequence[Comparison | dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each comparison over the rounds where both of its runs are valid (none: left out)."""
    by_round: dict[tuple[int, str, str], dict[str, Any]] = {
        (r["round"], r["path"], r["measurement"]): r["metrics"] for r in runs if invalid_reason(r) is None
    }
    rounds = sorted({r["round"] for r in runs})
    out = []
    for comp in comparisons:
        c = comp if isinstance(comp, Comparison) else _comparison_from_dict(comp)
        values = []
        for rnd in rounds:
            num = by_round.get((rnd, c.num.path, c.num.measurement), {}).get(c.num.metric)
            den = by_round.get((rnd, c.den.path, c.den.measurement), {}).get(c.den.metric)
            if num is None or den is None or (c.kind == "ratio" and not den):
                continue
            values.append(num / den if c.kind == "ratio" else num - den)
        if values:
            out.append(
                {"row": c.row, "column": c.column, "kind": c.kind, "per_round": values, **spread(values)}
            )
    return out


def _comparison_from_dict(data: dict[str, Any]) -> Comparison:
    return Comparison(
        data["row"], data["column"], Ref(**data["num"]), Ref(**data["den"]), data.get("kind", "ratio")
    )


def pairwise(
    pairs: Sequence[tuple[str, str]], rows: Sequence[tuple[str, str, str]], kind: str = "ratio"
) -> tuple[Comparison, ...]:
    """Comparisons of each (num, den) path pair on each (row title, measurement, metric)."""
    sign = "/" if kind == "ratio" else "-"
    return tuple(
        Comparison(title, f"{num} {sign} {den}", Ref(num, m, k), Ref(den, m, k), kind)
        for title, m, k in rows
        for num, den in pairs
    )


def closed_loop(connections: int, headers: tuple[str, ...] = ()) -> RunFn:
    """A wrk run (closed loop) over ``connections`` keep-alive connections, each request with
    ``headers`` ("name: value")."""

    def run(settings: Settings, port: int) -> dict[str, Any]:
        return wrk.run(port, connections, settings.duration_s, settings.cpu_load, headers=headers)

    return run


def saturating_and_serial(connections: int) -> tuple[Measurement, Measurement]:
    """The two wrk measurements most scenarios share: saturating throughput and serial latency."""
    return (
        Measurement(
            "saturate",
            f"Saturating throughput (wrk -t1 -c{connections})",
            "throughput",
            closed_loop(connections),
        ),
        Measurement("serial", "Serial round trip (wrk -t1 -c1)", "latency", closed_loop(1)),
    )
