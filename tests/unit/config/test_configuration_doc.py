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
