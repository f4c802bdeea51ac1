"""benchmarks.report on recorded quick runs of scenarios 6 and 7 (data/xds-sample.json,
data/cost-sample.json): the published Envoy figure shows as a marked reference row beside the
measured ones without entering the runs, and the xDS figures get their titles. No timing is asserted."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks import report

DATA = Path(__file__).parent / "data"


def _load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def _rows(markdown: str, section: str) -> list[list[str]]:
    table = markdown.split(section, 1)[1].split("\n\n")[1]
    return [line[2:-2].split(" | ") for line in table.splitlines()[2:]]


def test_cost_tables_carry_the_published_envoy_row_beside_the_measured_ones() -> None:
    result = _load("cost-sample.json")
    text = report.scenario_tables(result)
    for section in ("### Open loop, 1,000 req/s", "### Open loop, 2,000 req/s"):
        rows = {r[0]: r for r in _rows(text, section)}
        assert set(rows) == {"meshproxy", "haproxy", "nginx", "Envoy (Istio 1.12-1.15) (published)"}
        header = text.split(section, 1)[1].split("\n\n")[1].splitlines()[0][2:-2].split(" | ")
        column = header.index("vCPU per 1k req/s")
        assert rows["Envoy (Istio 1.12-1.15) (published)"][column] == "0.350"
        measurement = "rate1k" if "1,000" in section else "rate2k"
        measured = [
            r["metrics"]["vcpu_per_krps"]
            for r in result["runs"]
            if r["path"] == "meshproxy" and r["measurement"] == measurement
        ]
        assert rows["meshproxy"][column] == f"{statistics.median(measured):.3f}"
    assert "(published) Envoy (Istio 1.12-1.15): https://istio.io/" in text
    # the reference is not a run: it is in no ratio and no summary
    assert all(r["path"] in ("meshproxy", "haproxy", "nginx") for r in result["runs"])


def test_memory_table_and_ratios() -> None:
    text = report.scenario_tables(_load("cost-sample.json"))
    rows = {r[0]: r for r in _rows(text, "### Resident memory")}
    assert set(rows) == {"meshproxy", "haproxy", "nginx"}  # no published memory row
    assert "RSS per 1,000 clusters" in text.split("### Ratios", 1)[1]


def test_xds_tables_are_titled() -> None:
    text = report.scenario_tables(_load("xds-sample.json"))
    for title in ("all received max ms", "push-to-effect p50 ms", "first: max loop stall ms"):
        assert title in text
    fanout = _rows(text, "### Push fan-out")
    assert fanout[0][1] == "1000"  # streams print as a count
    assert "(published)" not in text
