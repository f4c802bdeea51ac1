"""The compatibility corpus (issue 15): every bootstrap in ``bootstraps/`` either runs and does
what it asks over real sockets, or is refused with exactly the problems registered for it;
at least 80% are accepted; ``docs/compatibility.md`` is the table rendered from the corpus.

The upstreams are shared by the whole module (each on a thread of its own, so tests on either
event loop reach them); each accepted case starts its own proxy in-process.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
from collections.abc import Iterator

import pytest
from integration.harness import free_port
from integration.upstreams import threaded_upstream

from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.errors import ConfigError

from . import cases_dynamic, cases_filters, cases_http, cases_lb, cases_refused, cases_tls  # noqa: F401  (register)
from .corpus import BOOTSTRAPS, CASES, Case, Env
from .doc import DOC, render
from .tls import server_context

ACCEPTED = [case for case in CASES.values() if case.accepted]
REFUSED = [case for case in CASES.values() if not case.accepted]


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, int]]:
    with contextlib.ExitStack() as stack:
        ports = {name: stack.enter_context(threaded_upstream(name)) for name in ("svc1", "svc2", "svc3")}
        for name in ("tls", "tls-h1"):
            ports[name] = stack.enter_context(threaded_upstream(name, server_context("service")))
        ports["dead"] = free_port()
        yield ports


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
async def test_accepted(case: Case, upstreams: dict[str, int], tmp_path: pathlib.Path) -> None:
    assert case.check is not None
    await case.check(Env(case, upstreams, tmp_path))


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.name)
def test_refused(case: Case, upstreams: dict[str, int], tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_bootstrap(json.dumps(Env(case, upstreams, tmp_path).document()), source=case.path.name)
    assert err.value.problems == list(case.refused)


def test_every_file_is_registered() -> None:
    assert sorted(p.stem for p in BOOTSTRAPS.glob("*.yaml")) == sorted(CASES)
    for case in CASES.values():
        assert case.path.read_text(encoding="utf-8").startswith("# Shape: "), case.name
        assert case.origin(), case.name


def test_acceptance_rate() -> None:
    assert len(CASES) >= 30
    assert len(ACCEPTED) / len(CASES) >= 0.8, f"{len(ACCEPTED)} of {len(CASES)} accepted"


def test_doc_is_the_rendered_corpus() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/compatibility.md is stale: "
        "PYTHONPATH=$PWD:$PWD/tests python -m compat.doc > docs/compatibility.md"
    )
