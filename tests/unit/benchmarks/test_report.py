"""benchmarks.report on a recorded result (data/http1-sample.json, a real quick run of scenario 1
against direct, haproxy and nginx): the tables carry the right medians and paired ratios, the plots
are written, and the latest file of each scenario is the one reported. No timing is asserted."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report

SAMPLE = Path(__file__).parent / "data" / "http1-sample.json"


@pytest.fixture(scope="module")
def sample() -> dict[str, Any]:
    return json.loads(SAMPLE.read_text())


def metric(result: dict[str, Any], path: str, measurement: str, name: str) -> dict[int, float]:
    return {
        r["round"]: r["metrics"][name]
        for r in result["runs"]
        if r["path"] == path and r["measurement"] == measurement and "metrics" in r
    }


def cells(line: str) -> list[str]:
    return line[2:-2].split(" | ")


def row(markdown: str, section: str, first_cell: str) -> list[str]:
    """The cells of the table row starting with ``first_cell`` in the section titled ``section``."""
    text = markdown.split(section, 1)[1]
    for line in text.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return cells(line)
    raise AssertionError(f"no row {first_cell!r} under {section!r}")


def header(markdown: str, section: str) -> list[str]:
    """The cells of the first table header under ``section``."""
    text = markdown.split(section, 1)[1]
    return cells(next(line for line in text.splitlines() if line.startswith("|")))


def span(values: list[float], show: Any) -> str:
    return f"{show(statistics.median(values))} [{show(min(values))}\u2013{show(max(values))}]"


def test_figure_tables_show_median_and_range(sample: dict[str, Any]) -> None:
    tables = report.scenario_tables(sample)
    for path in ("direct", "haproxy", "nginx"):
        rps = list(metric(sample, path, "saturate", "rps").values())
        assert len(rps) == sample["settings"]["rounds"]
        assert row(tables, "Saturating throughput", path)[1] == span(rps, lambda v: report.fmt(v, "rps"))
        p50 = list(metric(sample, path, "serial", "p50_ms").values())
        assert row(tables, "Serial round trip", path)[2] == span(p50, lambda v: report.fmt(v, "p50_ms"))


def test_ratios_are_medians_of_same_round_pairs(sample: dict[str, Any]) -> None:
    tables = report.scenario_tables(sample)
    haproxy = metric(sample, "haproxy", "saturate", "rps")
    direct = metric(sample, "direct", "saturate", "rps")
    nginx = metric(sample, "nginx", "saturate", "rps")
    ratios = header(tables, "### Ratios")
    line = row(tables, "### Ratios", "saturating req/s")
    expected = {
        "haproxy / direct": [haproxy[r] / direct[r] for r in direct],
        "nginx / haproxy": [nginx[r] / haproxy[r] for r in haproxy],
    }
    for column, values in expected.items():
        assert line[ratios.index(column)] == span(values, lambda v: f"{v:.2f}")
    added = header(tables, "### Added")
    serial = row(tables, "### Added", "serial p50")
    h50, d50 = metric(sample, "haproxy", "serial", "p50_ms"), metric(sample, "direct", "serial", "p50_ms")
    diff = [h50[r] - d50[r] for r in d50]
    assert serial[added.index("haproxy - direct")] == span(diff, lambda v: f"{v:+.3f}")


def test_report_writes_plots_and_machine_facts(sample: dict[str, Any], tmp_path: Path) -> None:
    markdown = report.build([sample], tmp_path)
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    names = {p.name for p in pngs}
    assert "http1-throughput.png" in names
    assert {f"http1-latency-{m}.png" for m in ("saturate", "serial", "open1k", "open5k")} <= names
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 5000
        assert f"(plots/{png.name})" in markdown
    assert sample["system"]["cpu_model"] in markdown
    assert markdown.count("| saturate |") == sample["settings"]["rounds"] * 3  # per-run CPU table


def test_regenerate_reports_the_latest_file_of_each_scenario(sample: dict[str, Any], tmp_path: Path) -> None:
    older = dict(sample, title="older title")
    (tmp_path / "20200101T000000Z-http1.json").write_text(json.dumps(older))
    shutil.copy(SAMPLE, tmp_path / "20300101T000000Z-http1.json")
    out = report.regenerate(tmp_path)
    text = out.read_text()
    assert out == tmp_path / "REPORT.md"
    assert sample["title"] in text
    assert "older title" not in text
