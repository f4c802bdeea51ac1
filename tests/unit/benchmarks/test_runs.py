"""Where benchmark runs write, and publishing one (defect 10: ``make bench-quick`` used to rewrite
the committed report and plots). A run goes to its own folder under ``results/runs/``, which git
ignores; only ``publish`` writes into the committed ``results/``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from benchmarks import report, runner

SAMPLE = Path(__file__).parent / "data" / "http1-sample.json"
REPO = Path(runner.__file__).resolve().parents[1]
NOW = datetime(2026, 12, 7, 20, 0, 5, tzinfo=UTC)


def test_runs_live_under_the_results_folder_and_git_ignores_them() -> None:
    assert runner.RUNS_DIR.parent == runner.RESULTS_DIR
    probe = runner.RUNS_DIR / "20261207T200005Z" / "20261207T200005Z-http1.json"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(probe.relative_to(REPO))], cwd=REPO, check=False
    )
    assert ignored.returncode == 0, f"{probe} would dirty the working tree"
    published = runner.RESULTS_DIR / "20261207T200005Z-http1.json"
    kept = subprocess.run(
        ["git", "check-ignore", "-q", str(published.relative_to(REPO))], cwd=REPO, check=False
    )
    assert kept.returncode == 1, "published results must stay tracked"


def test_new_run_dir_is_named_by_utc_time_and_never_reused(tmp_path: Path) -> None:
    first = runner.new_run_dir(NOW.astimezone(timezone(timedelta(hours=2))), tmp_path)
    second = runner.new_run_dir(NOW, tmp_path)  # the same second
    third = runner.new_run_dir(NOW, tmp_path)
    assert [first.name, second.name, third.name] == [
        "20261207T200005Z",
        "20261207T200005Z-2",
        "20261207T200005Z-3",
    ]
    assert all(p.is_dir() and p.parent == tmp_path for p in (first, second, third))


def test_write_result_goes_into_the_run_folder(tmp_path: Path) -> None:
    run = runner.new_run_dir(NOW, tmp_path / "runs")
    result = json.loads(SAMPLE.read_text())
    path = runner.write_result(result, run)
    assert path.parent == run
    assert json.loads(path.read_text()) == result
    assert sorted(p.name for p in (tmp_path / "runs").rglob("*") if p.is_file()) == [path.name]


def test_publish_copies_the_run_and_rebuilds_the_committed_report(tmp_path: Path) -> None:
    run, results = tmp_path / "runs" / "20261207T200005Z", tmp_path / "results"
    run.mkdir(parents=True)
    results.mkdir()
    shutil.copy(SAMPLE, run / "20261207T200005Z-http1.json")
    report.regenerate(run)  # what a run leaves in its folder
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    out = report.publish(run, results)

    assert out == results / "REPORT.md"
    assert (results / "20261207T200005Z-http1.json").read_bytes() == SAMPLE.read_bytes()
    assert json.loads(SAMPLE.read_text())["title"] in out.read_text()
    assert list((results / "plots").glob("*.png"))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # the run is untouched


def test_publish_refuses_a_folder_without_results(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a benchmark run folder"):
        report.publish(tmp_path / "missing", tmp_path)
    with pytest.raises(ValueError, match="not a benchmark run folder"):
        report.publish(tmp_path, tmp_path)
    assert not (tmp_path / "REPORT.md").exists()


def test_publish_command_names_the_folder_without_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "publish", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(f"{tmp_path}: not a benchmark run folder")
    assert "Traceback" not in proc.stderr
