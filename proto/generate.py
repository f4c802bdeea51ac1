"""Regenerate the committed Python code for the protos under ``proto/``.

Owns the one way generated code is produced: ``grpc_tools.protoc`` (from the ``grpcio-tools``
package, a developer tool, not a runtime dependency) writes ``*_pb2.py``, ``*_pb2.pyi`` and
``*_pb2_grpc.py`` into ``meshproxy/_gen/``, the package both programs import (the proxy's
identity agent is a client of the CA; the controlplane serves it): each proto package under
``meshproxy.`` becomes a sub-package of it (``meshproxy.ca.v1`` becomes ``meshproxy._gen.ca.v1``).
protoc emits absolute imports named after the proto package, which here would land in the
``meshproxy`` distribution's own package, so they are rewritten to the ``meshproxy._gen`` prefix.
The package's
``__init__.py`` records the SHA-256 of every proto it was generated from; a unit test compares
it with the protos in the tree, so an edited proto without regenerated code fails CI even on a
machine without grpcio-tools.

Usage: ``python proto/generate.py`` (write) or ``python proto/generate.py --check`` (exit 1 when
the committed code differs from what the installed grpcio-tools would generate).
Depends only on the standard library and grpcio-tools.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_PACKAGE = "meshproxy._gen"
OUT_DIR = ROOT / "meshproxy" / "_gen"
IMPORT = re.compile(r"^(from|import) meshproxy\.", re.MULTILINE)

INIT_DOC = '''"""Generated protobuf and gRPC code for the protos under ``proto/``; do not edit.

Regenerate with ``python proto/generate.py`` (see ``proto/README.md``). ``PROTO_SHA256`` records
the protos this code was generated from, so a stale copy is detected without grpcio-tools.
"""
'''


def protos() -> list[Path]:
    return sorted(p.relative_to(PROTO_DIR) for p in PROTO_DIR.rglob("*.proto"))


def generate(out: Path) -> None:
    """Write the generated tree for every proto into ``out`` (a missing directory)."""
    from grpc_tools import protoc

    # protoc writes each file under its proto package's path (meshproxy/ca/v1/...); the
    # ``meshproxy`` level of that path is ``out`` itself.
    protoc_out = out.parent / "protoc"
    protoc_out.mkdir(parents=True)
    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={protoc_out}",
        f"--pyi_out={protoc_out}",
        f"--grpc_python_out={protoc_out}",
        *(str(p) for p in protos()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (its message is above)")
    shutil.move(protoc_out / "meshproxy", out)
    for path in sorted(out.rglob("*.py*")):
        path.write_text(IMPORT.sub(rf"\1 {OUT_PACKAGE}.", path.read_text()))
    for directory in sorted({p.parent for p in out.rglob("*_pb2.py")} | {out}):
        while directory != out.parent:
            init = directory / "__init__.py"
            if not init.exists():
                init.write_text("")
            directory = directory.parent
    digests = {str(p): hashlib.sha256((PROTO_DIR / p).read_bytes()).hexdigest() for p in protos()}
    lines = [INIT_DOC, "PROTO_SHA256 = {"]
    lines += [f'    "{name}": "{digest}",' for name, digest in digests.items()]
    (out / "__init__.py").write_text("\n".join([*lines, "}", ""]))


def differences(a: Path, b: Path) -> list[str]:
    """Relative paths that differ between two generated trees (missing on either side included)."""
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    changed = {p for p in files_a & files_b if not filecmp.cmp(a / p, b / p, shallow=False)}
    return sorted(str(p) for p in (files_a ^ files_b) | changed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "_gen"
        generate(fresh)
        if args.check:
            stale = differences(fresh, OUT_DIR)
            for name in stale:
                print(f"stale generated file: {OUT_DIR.relative_to(ROOT)}/{name}", file=sys.stderr)
            return 1 if stale else 0
        shutil.rmtree(OUT_DIR, ignore_errors=True)
        shutil.copytree(fresh, OUT_DIR)
    print(f"generated {len(protos())} proto(s) into {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
