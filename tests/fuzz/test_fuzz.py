"""The fuzzers in ``make test``: every corpus input replayed, then a short seeded run per target.

Owns the bounded, deterministic part of the fuzzing (docs/fuzzing.md): ``test_corpus_replays``
runs every checked-in input through its target in-process and fails on a crash, a hang past the
per-input budget, or a finding that is not a known open one (tracked in test_findings.py);
``test_short_fuzz_run`` starts ``python -m tests.fuzz`` (atheris, coverage-guided) for a fixed
number of new inputs with a fixed seed, writing new inputs to a temporary directory so the
checked-in corpus is never touched, and fails on any crash, timeout or new finding it reports; its
ledger entry goes to a temporary ledger and must carry the run's real count.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import pytest

from tests.fuzz import ledger
from tests.fuzz.targets import TARGETS, Finding, known

ROOT = pathlib.Path(__file__).parents[2]
CORPUS = pathlib.Path(__file__).parent / "corpus"
# Seconds one input may take in the replay (the slowest seed takes well under a tenth of it).
INPUT_BUDGET = 2.0
# New inputs per target in the short run, beyond replaying the corpus (libFuzzer counts both).
NEW_INPUTS = 400


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_replays(target: str) -> None:
    files = sorted((CORPUS / target).iterdir())
    assert files, f"no corpus for {target}"
    problems = []
    for path in files:
        data = path.read_bytes()
        start = time.perf_counter()
        try:
            TARGETS[target].run(data)
        except Finding as finding:
            if known(target, finding.kind, data) is None:
                problems.append(f"{path.name}: new finding {finding}")
        elapsed = time.perf_counter() - start
        if elapsed > INPUT_BUDGET:
            problems.append(f"{path.name}: {elapsed:.1f} s, over the {INPUT_BUDGET} s budget (a hang)")
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_short_fuzz_run(target: str, tmp_path: pathlib.Path) -> None:
    (tmp_path / "new").mkdir()
    runs = len(list((CORPUS / target).iterdir())) + NEW_INPUTS
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz",
            target,
            f"--ledger={tmp_path / 'ledger.jsonl'}",
            str(tmp_path / "new"),
            str(CORPUS / target),
            f"-runs={runs}",
            "-seed=1",
            "-timeout=10",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    tail = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("INFO: Instrumenting"))
    assert done.returncode == 0, tail[-4000:]
    assert f"Done {runs} runs" in tail, tail[-2000:]
    (entry,) = ledger.read(tmp_path / "ledger.jsonl")
    assert (entry["target"], entry["inputs"], entry["exit"]) == (target, runs, 0)
