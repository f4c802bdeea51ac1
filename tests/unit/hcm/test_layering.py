"""The request path's layering, read from the source with ``ast``: the HCM sits above both
codecs, neither codec package imports the other's way back, and nothing dodges a cycle with
an import inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import meshproxy

ROOT = Path(meshproxy.__file__).parent
CHECKED = ("http", "http2", "hcm", "listener")


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _imported(node: ast.Import | ast.ImportFrom, known: dict[str, ast.Module]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    # "from meshproxy.http import codec" imports the module meshproxy.http.codec
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def module_level_imports(tree: ast.Module, known: dict[str, ast.Module]) -> set[str]:
    """What a module imports when it is imported (``if TYPE_CHECKING:`` blocks excluded)."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.update(n for n in _imported(node, known) if n.startswith("meshproxy"))
            elif isinstance(node, ast.If) and not _type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(tree.body)
    return found


def all_imports(tree: ast.Module, known: dict[str, ast.Module]) -> set[str]:
    """Every import anywhere in a module, type-checking ones included."""
    return {
        n
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for n in _imported(node, known)
        if n.startswith("meshproxy")
    }


def package(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_inside_a_function_on_the_request_path() -> None:
    inner = []
    for name, tree in modules().items():
        if package(name) not in CHECKED:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                inner += [
                    f"{name}:{sub.lineno}"
                    for sub in ast.walk(node)
                    if isinstance(sub, ast.Import | ast.ImportFrom)
                ]
    assert inner == []


def test_http1_never_imports_http2_and_the_hcm_imports_neither_codec() -> None:
    known = modules()
    wrong = []
    for name, tree in known.items():
        pkg = package(name)
        for target in all_imports(tree, known):
            to = package(target)
            if (pkg == "http" and to == "http2") or (pkg == "hcm" and to in ("http", "http2", "listener")):
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_no_module_level_import_cycle() -> None:
    known = modules()
    graph = {name: module_level_imports(tree, known) & known.keys() for name, tree in known.items()}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt == node or nxt == node.rsplit(".", 1)[0]:
                continue  # a module and its own package's __init__
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                if any(package(m) in CHECKED for m in cycle):
                    cycles.append(" -> ".join(cycle))
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert cycles == []
