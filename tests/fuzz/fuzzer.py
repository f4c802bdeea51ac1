"""``python -m tests.fuzz.fuzzer TARGET [libFuzzer options] [corpus dirs]``: one coverage-guided fuzzer.

Owns the atheris entry point (``python -m tests.fuzz`` runs it in a child process and keeps the
ledger): the project's modules (and the pure-Python parsers below them: h2, hpack, PyYAML) are
imported under ``atheris.instrument_imports`` so libFuzzer sees their branch coverage, then the
target named on the command line runs under ``atheris.Fuzz``. A ``Finding`` of a known open class
(``targets.KNOWN_OPEN``, matched by kind and input signature) is counted, not raised
(``test_findings.REPRODUCERS`` lists its inputs), so a long run goes on looking for new ones; the
counts are printed at exit. Anything else that escapes a target is a crash: libFuzzer writes the
input to ``crash-<sha1>`` (``timeout-<sha1>`` past ``-timeout``) and exits non-zero.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import io
import sys

import atheris

# atheris names every module it instruments on stderr: hundreds of lines nobody reads.
with (
    contextlib.redirect_stderr(io.StringIO()),
    atheris.instrument_imports(
        include=["meshproxy", "controlplane", "h2", "hpack", "yaml", "tests.fuzz"],
        # The harness: its loop rounds are no coverage of the code under test, only noise.
        exclude=["tests.fuzz.inproc", "tests.fuzz.ledger"],
    ),
):
    from tests.fuzz.targets import TARGETS, Finding, known

_known: collections.Counter[str] = collections.Counter()


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.fuzzer {{{','.join(TARGETS)}}} [libFuzzer options] [dir...]")
    name = sys.argv.pop(1)
    target = TARGETS[name]

    def one(data: bytes) -> None:
        try:
            target.run(data)
        except Finding as finding:
            which = known(name, finding.kind, data)
            if which is None:
                raise
            _known[which] += 1

    atexit.register(
        lambda: _known and print(f"known open findings hit ({name}): {dict(_known)}", file=sys.stderr)
    )
    argv = [sys.argv[0], f"-max_len={target.max_len}", *sys.argv[1:]]
    atheris.Setup(argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
