"""``python -m tests.fuzz TARGET [--no-ledger | --ledger=PATH] [libFuzzer options] [corpus dirs]``.

Owns one fuzz run as the ledger sees it: starts the coverage-guided fuzzer (``tests.fuzz.fuzzer``,
atheris) in a child process, passes its output through, reads libFuzzer's final figures from it
(``-print_final_stats=1`` is added), and appends the run to the ledger (``tests/fuzz/ledger.jsonl``
unless told otherwise) whatever the outcome: a run that ends on a crash still ran its inputs.
The child, not this process, imports the instrumented code, so nothing here slows the fuzzer.
Exits with the fuzzer's status.
"""

from __future__ import annotations

import collections
import pathlib
import subprocess
import sys
import time

from tests.fuzz import ledger

# Output lines kept for the final figures: the status lines near the end, and the final stats.
_KEPT_LINES = 200
_USAGE = "usage: python -m tests.fuzz TARGET [--no-ledger | --ledger=PATH] [libFuzzer options] [dir...]"


def main(argv: list[str]) -> int:
    if not argv:
        sys.exit(_USAGE)
    target, rest = argv[0], argv[1:]
    path: pathlib.Path | None = ledger.LEDGER
    if "--no-ledger" in rest:
        rest.remove("--no-ledger")
        path = None
    for arg in [a for a in rest if a.startswith("--ledger=")]:
        rest.remove(arg)
        path = pathlib.Path(arg.removeprefix("--ledger="))
    if not any(a.startswith("-print_final_stats") for a in rest):
        rest.append("-print_final_stats=1")
    kept: collections.deque[str] = collections.deque(maxlen=_KEPT_LINES)
    start = time.monotonic()
    command = [sys.executable, "-m", "tests.fuzz.fuzzer", target, *rest]
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, errors="replace")
    assert child.stderr is not None
    try:
        for line in child.stderr:
            sys.stderr.write(line)
            if line.startswith(("#", "stat::", "Done ")):
                kept.append(line)
    except KeyboardInterrupt:  # the child got the same SIGINT: libFuzzer prints its stats and exits
        kept.extend(line for line in child.stderr if line.startswith(("#", "stat::", "Done ")))
    status = child.wait()
    figures = ledger.parse_output(kept)
    if path is not None and figures is not None and figures.inputs > 0:
        entry = ledger.record(target, figures, time.monotonic() - start, status, path)
        print(f"ledger: {entry}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
