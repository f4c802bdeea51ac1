"""The fuzzing ledger: the doc's totals are the ledger's, and every entry is complete.

Owns the checks on ``tests/fuzz/ledger.jsonl`` and the table generated from it in
docs/fuzzing.md; that ``python -m tests.fuzz`` appends a run's real figures is checked by
``test_fuzz.test_short_fuzz_run`` (it writes to a temporary ledger).
"""

from __future__ import annotations

from tests.fuzz import ledger
from tests.fuzz.targets import TARGETS

_KEYS = {"target", "inputs", "seconds", "exec_per_s", "cov", "ft", "exit", "date", "commit"}


def test_the_doc_shows_the_ledger_totals() -> None:
    doc = ledger.DOC.read_text(encoding="utf-8")
    table = ledger.render_table(ledger.read())
    assert ledger.doc_with_table(doc, table) == doc, (
        "docs/fuzzing.md is out of date: run `python -m tests.fuzz.ledger --write-doc`"
    )


def test_every_entry_is_complete_and_names_a_target() -> None:
    entries = ledger.read()
    assert entries
    for entry in entries:
        assert set(entry) >= _KEYS, entry
        assert entry["target"] in TARGETS, entry
        assert isinstance(entry["inputs"], int) and entry["inputs"] > 0, entry
    earlier = [e for e in entries if e.get("earlier")]
    assert len(earlier) == len({e["target"] for e in earlier}) == 7, "one earlier run per first target"
    assert all(e["note"].startswith("earlier run recorded from docs/fuzzing.md") for e in earlier)
    assert entries[: len(earlier)] == earlier, "the earlier runs are the ledger's first entries"


def test_totals_sum_the_runs_of_each_target() -> None:
    entries = ledger.read()
    totals = ledger.totals(entries)
    assert set(totals) == {e["target"] for e in entries}
    for target, total in totals.items():
        mine = [e for e in entries if e["target"] == target]
        assert total.inputs == sum(int(e["inputs"]) for e in mine)
        assert total.runs == len(mine)


def test_an_interrupted_run_counts_its_last_status_line() -> None:
    """Without the final stats (killed, or an old libFuzzer), the last ``#N`` line counts."""
    out = [
        "INFO: Seed: 1\n",
        "#2\tINITED cov: 10 ft: 12 corp: 1/1b exec/s: 0 rss: 50Mb\n",
        "#4096\tpulse  cov: 30 ft: 41 corp: 5/90b lim: 4 exec/s: 2048 rss: 51Mb\n",
        "#4100\tNEW    cov: 31 ft: 42 corp: 6/99b lim: 4 exec/s: 2050 rss: 51Mb L: 4/4 MS: 1 ChangeByte-\n",
    ]
    assert ledger.parse_output(out) == ledger.Figures(inputs=4100, exec_per_s=2050, cov=31, ft=42)
    assert ledger.parse_output(["INFO: Seed: 1\n"]) is None
