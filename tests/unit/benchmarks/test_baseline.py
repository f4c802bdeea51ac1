"""A change measured against its parent in one run: MESHPROXY_BENCH_BASELINE adds the other tree's
meshproxy as paths of scenarios 1 and 4, run with that tree first on the import path."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from benchmarks import targets


def test_baseline_argv_runs_the_other_tree_from_the_repo_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    """Targets start in REPO_ROOT, whose meshproxy ``-m`` would find first: the baseline's argv
    must still run the BASELINE tree's (it ran this checkout's, so "base" measured the change)."""
    fake = tmp_path / "meshproxy"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text("import sys; print('baseline', *sys.argv[1:])\n")
    monkeypatch.setattr(targets, "BASELINE", str(tmp_path))
    argv = targets.meshproxy_argv("run", "-c", "b.yaml", baseline=True)
    out = subprocess.run(argv, cwd=targets.REPO_ROOT, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["baseline", "run", "-c", "b.yaml"]
    assert targets.meshproxy_argv("run", "-c", "b.yaml") == [
        sys.executable,
        "-m",
        "meshproxy",
        "run",
        "-c",
        "b.yaml",
    ]


@pytest.mark.parametrize(("baseline", "expected"), [("", False), ("/src/previous", True)])
def test_scenarios_gain_baseline_paths_only_when_asked(baseline: str, expected: bool) -> None:
    code = (
        "from benchmarks import http1, h2\n"
        "paths = {p.target for s in (http1.SCENARIO, h2.SCENARIO) for p in s.paths}\n"
        "pairs = {c.column for s in (http1.SCENARIO, h2.SCENARIO) for c in s.comparisons}\n"
        "print('meshproxy-base' in paths, 'meshproxy-h2c-base' in paths,"
        " 'meshproxy / meshproxy-base' in pairs, 'meshproxy-h2c / meshproxy-h2c-base' in pairs)\n"
    )
    env = {"MESHPROXY_BENCH_BASELINE": baseline, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(expected)] * 4
