"""Renders docs/compatibility.md from the corpus: one source for the table and the tests.

Run ``PYTHONPATH=$PWD:$PWD/tests python -m compat.doc > docs/compatibility.md`` after changing a
case; ``test_corpus.test_doc_is_the_rendered_corpus`` fails while the file is stale.
"""

from __future__ import annotations

import pathlib

from . import cases_dynamic, cases_filters, cases_http, cases_lb, cases_refused, cases_tls  # noqa: F401  (register)
from .corpus import CASES

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"

_INTRO = """\
# Compatibility corpus

Envoy bootstraps in the shapes real deployments use (Envoy's examples, the sidecar bootstrap
Istio generates, Contour's and Emissary's), each written for this corpus after reading the
published one; the files are `tests/compat/bootstraps/*.yaml`, their first comment names the
shape. `tests/compat/test_corpus.py` runs each one: an **accepted** file starts the proxy (listeners
moved to loopback, endpoints to local upstreams, certificate files to generated ones; nothing
else changed) and its behaviour is asserted over real sockets; a **refused** file must fail with
exactly the problems listed here, each naming its field path.

Not in the corpus: Envoy's examples whose subject is an extension meshproxy does not run
(cache, csrf, golang, kafka, postgres, udp, the SkyWalking and
Datadog tracers, load reporting, the gRPC-HTTP/1.1 bridge, the single-page app's OAuth2): each
would be refused the way `lua.yaml` and `zipkin.yaml` are, naming the extension.

This page is generated from the corpus (`PYTHONPATH=$PWD:$PWD/tests python -m compat.doc >
docs/compatibility.md`); a test fails when it is stale.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    cases = sorted(CASES.values(), key=lambda c: (not c.accepted, c.name))
    accepted = sum(1 for c in cases if c.accepted)
    lines = [
        _INTRO,
        f"**{accepted} of {len(cases)} accepted ({100 * accepted // len(cases)}%).**",
        "",
        "| File | Shape and origin | Result | Asserted, or why refused |",
        "|---|---|---|---|",
    ]
    for case in cases:
        result = "accepted" if case.accepted else "refused"
        lines.append(f"| `{case.name}.yaml` | {_cell(case.origin())} | {result} | {_cell(case.asserted)} |")
    refusals = [c for c in cases if not c.accepted]
    if refusals:
        lines += ["", "## Refusal messages", ""]
        for case in refusals:
            lines.append(f"`{case.name}.yaml`:")
            lines.append("")
            lines += [f"- `{_cell(problem)}`" for problem in case.refused]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(render(), end="")
