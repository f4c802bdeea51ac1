"""docs/configuration.md quotes only refusals the code can produce (issue 11, defect 12).

The convention, stated in the document's "The three rules": a refusal message is quoted as
backticked text right after ``rejected:`` (or ``rejected (why):``), and ``…`` stands for the
parts that vary (a field path, a value, a list of names). Each run of text between ``…`` must
appear in a string constant (or the constant part of an f-string) in the ``meshproxy`` package,
so a message changed or removed in the code fails this test until the docs follow.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from meshproxy.config.fidelity import TABLE, markdown

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "configuration.md"
QUOTE = re.compile(r"rejected(?: \([^)`]*\))?: `([^`]+)`")


def _constants() -> list[str]:
    found: list[str] = []
    for path in sorted((ROOT / "meshproxy").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
    return found


CONSTANTS = _constants()
QUOTES = QUOTE.findall(DOC.read_text(encoding="utf-8"))


def test_the_doc_quotes_refusals_in_the_recognised_form() -> None:
    assert len(QUOTES) >= 15, "the convention matches nothing: was the marker changed?"


@pytest.mark.parametrize("quote", QUOTES)
def test_every_quoted_refusal_exists_in_the_code(quote: str) -> None:
    fragments = [f.strip() for f in quote.split("…") if f.strip(" :.,;\"'")]
    assert fragments, f"{quote!r} quotes nothing but placeholders"
    for fragment in fragments:
        assert any(fragment in constant for constant in CONSTANTS), (
            f"docs/configuration.md quotes {quote!r}, but no string in meshproxy/ contains {fragment!r}"
        )


BEGIN, END = "<!-- fidelity:begin -->\n", "<!-- fidelity:end -->"


def test_the_fields_meshproxy_does_not_run_are_the_fidelity_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    assert section == markdown(), (
        "docs/configuration.md differs from meshproxy/config/fidelity.py: replace the text between "
        "the fidelity markers with the output of `python -m meshproxy.config.fidelity`"
    )


def _row_support(line: str) -> str:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    return cells[-1] if len(cells) >= 2 else ""


def test_no_row_of_a_classified_message_says_ignored() -> None:
    """A message in the fidelity table has no "ignored" rows: its fields are implemented,
    refused or accepted with a reason. Sections of messages still UNCLASSIFIED may say it."""
    assert _ignored_rows_of_classified_messages(DOC.read_text(encoding="utf-8")) == []


def _ignored_rows_of_classified_messages(text: str) -> list[str]:
    classified = {_heading_key(name.rsplit(".", 1)[-1]) for name in TABLE}
    heading = ""
    offenders = []
    for line in text.splitlines():
        if line.startswith("#"):
            heading = _heading_key(line.lstrip("#"))
        elif line.startswith("|") and _row_support(line).startswith("ignored") and heading in classified:
            offenders.append(line)
    return offenders


def _heading_key(text: str) -> str:
    """ "Health checks" and "HealthCheck" alike."""
    return text.replace(" ", "").lower().rstrip("s")
