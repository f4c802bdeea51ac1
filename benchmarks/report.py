"""From result files to ``results/REPORT.md`` and its PNG plots.

Owns the presentation: for the latest result of each scenario, tables of every figure as
median [min-max], the ratio and difference tables of the paired comparisons, latency percentile
curves (x: percentile on a "nines" axis, y: ms; a line per path with its min-max band), throughput
bars with min-max error bars, and the machine facts and per-run /proc/stat busy and steal. The
numbers come from runner.summarize and runner.compare over the stored runs, so an old file is
reported with today's arithmetic. matplotlib (Agg) is imported only when plotting.

``python -m benchmarks.report [--results DIR]`` regenerates from the latest files. A run writes
its files and its own report into its folder under ``results/runs/`` (ignored by git);
:func:`publish` (``python -m benchmarks publish RUN``, ``make bench-publish RUN=…``) is the one step
that puts a run into the committed ``results/`` and rebuilds ``results/REPORT.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import shutil
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.histogram import PERCENTILES, percentile_key
from benchmarks.runner import DEFAULT_COLUMNS, RESULTS_DIR, RUNS_DIR, compare, invalid_reason, summarize

DASH = "\u2013"  # the en dash of "median [min\u2013max]"

NOISY_PCT = 20

TITLES = {
    "rps": "req/s",
    "p50_ms": "p50 ms",
    "p90_ms": "p90 ms",
    "p99_ms": "p99 ms",
    "p999_ms": "p99.9 ms",
    "max_ms": "max ms",
    "proxy_cpu_us_per_req": "proxy CPU µs/req",
    "lag_p99_ms": "generator lag p99 ms",
    "vcpu_per_krps": "vCPU per 1k req/s",
    "rss_mb": "RSS MiB",
    "idle_mb": "fresh idle RSS MiB",
    "clusters_1k_mb": "fresh +1k clusters RSS MiB",
    "per_1k_clusters_mb": "MiB per 1k clusters",
    "streams": "streams",
    "connect_s": "streams up s",
    "all_p50_ms": "all received p50 ms",
    "all_max_ms": "all received max ms",
    "stream_p50_ms": "per-stream p50 ms",
    "server_cpu_ms_per_push": "server CPU ms/push",
    "effect_p50_ms": "push-to-effect p50 ms",
    "effect_max_ms": "push-to-effect max ms",
    "polls_p50": "polls p50",
    "first_config_s": "first config s",
    "first_max_stall_ms": "first: max loop stall ms",
    "move_max_stall_ms": "move: max loop stall ms",
    "first_max_slice_ms": "first: max xDS slice ms",
    "move_max_slice_ms": "move: max xDS slice ms",
    "errors": "errors",
}


def fmt(value: float, metric: str) -> str:
    """One figure as the report prints it."""
    if metric == "rps":
        return f"{value:,.0f}"
    if metric in ("errors", "streams"):
        return f"{value:.0f}"
    if metric.startswith("vcpu"):
        return f"{value:.3f}"
    if metric.endswith("_ms"):
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2 if abs(value) >= 1 else 3
        return f"{value:.{digits}f}"
    return f"{value:.1f}"


def fmt_compared(value: float, kind: str) -> str:
    return f"{value:.2f}" if kind == "ratio" else f"{value:+.3f}"


def cell(stats: dict[str, Any], show: Callable[[float], str]) -> str:
    """``median [min-max]``, or the median alone when there was one round."""
    if stats["n"] == 1:
        return show(stats["median"])
    return f"{show(stats['median'])} [{show(stats['min'])}{DASH}{show(stats['max'])}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _matrix(results: Sequence[dict[str, Any]], kind: str) -> list[str]:
    chosen = [r for r in results if r["kind"] == kind]
    rows = list(dict.fromkeys(r["row"] for r in chosen))
    columns = list(dict.fromkeys(r["column"] for r in chosen))
    at = {(r["row"], r["column"]): r for r in chosen}
    body = [
        [
            row,
            *(
                cell(at[(row, c)], lambda v: fmt_compared(v, kind)) if (row, c) in at else "-"
                for c in columns
            ),
        ]
        for row in rows
    ]
    return _table(["", *columns], body) if body else []


def references(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Published figures the scenario's module shows beside its measured rows: its ``REFERENCES``,
    each ``{path, measurement, metric, value, source}``. Read from the module, not the result, so
    a reference stays out of the runs and their arithmetic."""
    try:
        module = importlib.import_module(f"benchmarks.{result['scenario']}")
    except ImportError:
        return []
    return list(getattr(module, "REFERENCES", ()))


def scenario_tables(result: dict[str, Any]) -> str:
    """The Markdown tables of one result: figures per measurement, ratios, differences."""
    summary = summarize(result["runs"])
    at = {(s["path"], s["measurement"], s["metric"]): s for s in summary}
    paths = [p["label"] for p in result["paths"]]
    settings = result["settings"]
    lines = [
        f"## {result['title']}",
        "",
        f"{result['started_at']} · {settings['rounds']} rounds x {settings['duration_s']} s"
        f"{' (quick)' if settings.get('quick') else ''} · proxy on core {settings['cpu_proxy']}, "
        f"load and upstream on core {settings['cpu_load']}"
        f"{' · cores kept awake' if settings.get('keep_awake') else ''} · `{result['scenario']}`",
        "",
    ]
    if result.get("note"):
        lines += [result["note"], ""]
    for path, reason in result.get("skipped", {}).items():
        lines += [f"**{path} skipped**: {reason.splitlines()[0]}", ""]
    published = references(result)
    for m in result["measurements"]:
        columns = [
            c for c in result.get("columns", DEFAULT_COLUMNS) if any((p, m["name"], c) in at for p in paths)
        ]
        rows = [
            [
                p,
                *(
                    cell(at[(p, m["name"], c)], lambda v, c=c: fmt(v, c)) if (p, m["name"], c) in at else "-"
                    for c in columns
                ),
            ]
            for p in paths
            if any((p, m["name"], c) in at for c in columns)
        ]
        refs = [r for r in published if r["measurement"] == m["name"] and r["metric"] in columns]
        rows += [
            [f"{r['path']} (published)", *(fmt(r["value"], c) if c == r["metric"] else "-" for c in columns)]
            for r in refs
        ]
        if rows:
            lines += [
                f"### {m['title']}",
                "",
                *_table(["path", *(TITLES.get(c, c) for c in columns)], rows),
                "",
                *(
                    f"(published) {path}: {source}, not measured here."
                    for path, source in dict.fromkeys((r["path"], r["source"]) for r in refs)
                ),
                *([""] if refs else []),
            ]
    noisy = [r for r in result["runs"] if any(c["busy_pct"] > NOISY_PCT for c in r.get("background", []))]
    if noisy:
        lines += [
            f"**Noisy machine**: {len(noisy)} of {len(result['runs'])} runs began while other processes "
            f"kept a core over {NOISY_PCT} % busy (column 'busy % before' of the per-run table).",
            "",
        ]
    excluded = [(r, invalid_reason(r)) for r in result["runs"]]
    excluded_lines = [
        f"- {r['path']} · {r['measurement']} · round {r['round'] + 1}: {why}" for r, why in excluded if why
    ]
    if excluded_lines:
        lines += ["Runs left out of ratios and plots:", "", *excluded_lines, ""]
    compared = compare(result["runs"], result["comparisons"])
    ratios, diffs = _matrix(compared, "ratio"), _matrix(compared, "diff")
    if ratios:
        lines += [f"### Ratios (median [min{DASH}max] of per-round ratios)", "", *ratios, ""]
    if diffs:
        lines += [
            f"### Added over the baseline, ms (median [min{DASH}max] of per-round differences)",
            "",
            *diffs,
            "",
        ]
    return "\n".join(lines)


def _runs_table(result: dict[str, Any]) -> list[str]:
    rows = []
    for run in result["runs"]:
        cores = " · ".join(f"{c['busy_pct']:.0f}/{c['steal_pct']:.0f}" for c in run.get("cpu", []))
        before = " · ".join(f"{c['busy_pct']:.0f}" for c in run.get("background", []))
        proxy = f"{run['proxy_cpu_s']:.2f}" if "proxy_cpu_s" in run else "-"
        status = "failed" if "error" in run else f"{run.get('wall_s', 0):.1f}"
        rows.append(
            [str(run["round"] + 1), run["path"], run["measurement"], cores, before or "-", proxy, status]
        )
    header = [
        "round",
        "path",
        "measurement",
        "busy/steal % per core",
        "busy % before (others)",
        "proxy CPU s",
        "wall s",
    ]
    return _table(header, rows)


def _system(result: dict[str, Any]) -> list[str]:
    facts = result["system"]
    rows = [
        ["revision", facts.get("revision", "unknown")],
        ["CPU", f"{facts['cpu_model']} x {facts['cpu_count']}"],
        ["kernel", facts["kernel"]],
        ["Python", f"{facts['python_implementation']} {facts['python']}, loop {facts['loop']}"],
        ["meshproxy extensions", str(facts["meshproxy_extensions"])],
        ["packages", ", ".join(f"{k} {v}" for k, v in facts["packages"].items() if v)],
        *([name, version] for name, version in facts["tools"].items()),
    ]
    return _table(["machine", ""], rows)


def _nines(p: float) -> float:
    return -math.log10(1 - p / 100)


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the scenario's PNGs into ``out_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    name = result["scenario"]
    paths = [p["label"] for p in result["paths"]]
    ok = [r for r in result["runs"] if invalid_reason(r) is None]
    written = []
    xs = [_nines(q) for q in PERCENTILES]
    for m in result["measurements"]:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        drawn = False
        for path in paths:
            spectra = [
                r["metrics"]["percentiles_ms"]
                for r in ok
                if r["path"] == path and r["measurement"] == m["name"] and "percentiles_ms" in r["metrics"]
            ]
            if not spectra:
                continue
            per_q = [[s[percentile_key(q)] for s in spectra] for q in PERCENTILES]
            (line,) = ax.plot(xs, [statistics.median(v) for v in per_q], marker="o", label=path)
            ax.fill_between(
                xs, [min(v) for v in per_q], [max(v) for v in per_q], color=line.get_color(), alpha=0.15
            )
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xticks(xs, [percentile_key(q) for q in PERCENTILES])
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency, ms")
        low, high = ax.get_ylim()
        if high / max(low, 1e-3) > 30:
            ax.set_yscale("log")
        ax.set_title(m["title"], fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        target = out_dir / f"{name}-latency-{m['name']}.png"
        fig.savefig(target, dpi=110)
        plt.close(fig)
        written.append(target)
    throughput = [m for m in result["measurements"] if m["kind"] == "throughput"]
    summary = {(s["path"], s["measurement"]): s for s in summarize(ok) if s["metric"] == "rps"}
    shown = [p for p in paths if any((p, m["name"]) in summary for m in throughput)]
    if shown:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        width = 0.8 / len(shown)
        for i, path in enumerate(shown):
            found = [
                (j, summary[(path, m["name"])])
                for j, m in enumerate(throughput)
                if (path, m["name"]) in summary
            ]
            xs_bar = [j + (i - (len(shown) - 1) / 2) * width for j, _ in found]
            med = [s["median"] for _, s in found]
            err = [[s["median"] - s["min"] for _, s in found], [s["max"] - s["median"] for _, s in found]]
            bars = ax.bar(xs_bar, med, width, yerr=err, capsize=4, label=path)
            ax.bar_label(bars, [f"{v:,.0f}" for v in med], fontsize=8, padding=2)
        ax.set_xticks(range(len(throughput)), [m["title"] for m in throughput])
        ax.set_ylabel("requests/s (median, min to max)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        target = out_dir / f"{name}-throughput.png"
        fig.savefig(target, dpi=110)
        plt.close(fig)
        written.append(target)
    return written


def latest(results_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """The newest result of each scenario (file names start with a UTC timestamp)."""
    newest: dict[str, Path] = {}
    for path in sorted(results_dir.glob("*.json")):
        newest[path.stem.split("-", 1)[1]] = path
    return [json.loads(p.read_text()) for _, p in sorted(newest.items())]


def build(results: Sequence[dict[str, Any]], out_dir: Path) -> str:
    """The whole report for ``results``; plots are written under ``out_dir / "plots"``."""
    lines = [
        "# meshproxy benchmarks",
        "",
        "Generated by `python -m benchmarks.report` from the latest result files.",
        "",
    ]
    for result in results:
        lines += [scenario_tables(result), ""]
        for png in plot(result, out_dir / "plots"):
            lines += [f"![{png.stem}](plots/{png.name})", ""]
        lines += ["<details><summary>Machine and per-run CPU (busy/steal % per core)</summary>", ""]
        lines += [*_system(result), "", *_runs_table(result), "", "</details>", ""]
    return "\n".join(lines)


def regenerate(results_dir: Path = RESULTS_DIR) -> Path:
    out = results_dir / "REPORT.md"
    out.write_text(build(latest(results_dir), results_dir))
    return out


def publish(run_dir: Path, results_dir: Path = RESULTS_DIR) -> Path:
    """Copy a run's result files into ``results_dir`` and rebuild the report there."""
    files = sorted(run_dir.glob("*.json")) if run_dir.is_dir() else []
    if not files:
        raise ValueError(
            f"{run_dir}: not a benchmark run folder (no result files); runs are under {RUNS_DIR}"
        )
    for path in files:
        shutil.copy2(path, results_dir / path.name)
    return regenerate(results_dir)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild REPORT.md and plots from the latest results.")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    print(regenerate(args.results))


if __name__ == "__main__":
    main()
