"""The command line shared by ``python -m benchmarks`` and ``python -m benchmarks.<scenario>``.

Owns the flags, pinning the orchestrating process itself to the load core (so nothing but the
proxy runs on the proxy's core), running the chosen scenarios one after another, writing their
result files and the run's report into a fresh folder under ``results/runs/`` (ignored by git),
and ``publish RUN``, the explicit step that makes a run the committed report. Scenario modules are
imported by name, so registering a scenario is one entry in ``benchmarks.__main__.SCENARIOS``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import report, runner, targets


def _parser(scenarios: Sequence[str], several: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks" if several else f"python -m benchmarks.{scenarios[0]}",
        description="meshproxy benchmark suite: medians with min-max, ratios paired by round.",
    )
    parser.add_argument("--quick", action="store_true", help="short durations and few rounds")
    parser.add_argument("--rounds", type=int, help="rounds (default: the scenario's)")
    parser.add_argument("--duration", type=int, help="seconds per measurement (default: the scenario's)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of wrk warm-up per path start")
    parser.add_argument("--cpu-proxy", type=int, default=1, help="core of the proxy under test")
    parser.add_argument("--cpu-load", type=int, default=0, help="core of load generator and upstream")
    parser.add_argument(
        "--targets", default=",".join(targets.TARGETS), help=f"comma list from {','.join(targets.TARGETS)}"
    )
    parser.add_argument(
        "--keep-awake",
        action="store_true",
        help="SCHED_IDLE busy loops on both cores so idle vCPUs never halt (see system.KeepAwake)",
    )
    parser.add_argument("--no-report", action="store_true", help="do not write the run's REPORT.md")
    if several:
        parser.add_argument("--only", help=f"comma list from {','.join(scenarios)}")
    return parser


def main(argv: Sequence[str] | None, scenarios: Sequence[str]) -> int:
    several = len(scenarios) > 1
    if several and argv and argv[0] == "publish":
        return _publish(argv[1:])
    args = _parser(scenarios, several).parse_args(argv)
    chosen = list(scenarios)
    if several and args.only:
        chosen = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = set(chosen) - set(scenarios)
        if unknown:
            sys.exit(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {', '.join(scenarios)}")
    wanted = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = set(wanted) - set(targets.TARGETS)
    if unknown:
        sys.exit(f"unknown target(s): {', '.join(sorted(unknown))}; known: {', '.join(targets.TARGETS)}")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu_load})
    started = time.monotonic()
    run_dir = runner.new_run_dir(datetime.now(UTC))
    for name in chosen:
        scenario: runner.Scenario = importlib.import_module(f"benchmarks.{name}").SCENARIO
        timing = scenario.quick if args.quick else scenario.full
        settings = runner.Settings(
            rounds=args.rounds or timing.rounds,
            duration_s=args.duration or timing.duration_s,
            warmup_s=args.warmup,
            cpu_proxy=args.cpu_proxy,
            cpu_load=args.cpu_load,
            targets=wanted,
            quick=args.quick,
            keep_awake=args.keep_awake,
        )
        result = runner.run_scenario(scenario, settings)
        path = runner.write_result(result, run_dir)
        print(f"[{name}] wrote {path}")
        print(report.scenario_tables(result))
    if not args.no_report:
        print(f"report: {report.regenerate(run_dir)}")
    print(f"done in {time.monotonic() - started:.0f} s; publish with: make bench-publish RUN={run_dir}")
    return 0


def _publish(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks publish",
        description="Copy a run's result files into benchmarks/results/ and rebuild REPORT.md there.",
    )
    parser.add_argument("run", type=Path, help="a run folder, benchmarks/results/runs/<timestamp>")
    run = parser.parse_args(argv).run
    try:
        print(f"report: {report.publish(run)}")
    except ValueError as exc:
        sys.exit(str(exc))
    return 0
