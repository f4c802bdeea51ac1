"""The package boundaries between the proxy and the controlplane, checked on the source (ast).

The controlplane may depend on the proxy's packages, never the reverse; what it uses of them is
public (``meshproxy._gen``, the shared generated stubs, is the one underscored package meant for
both); the xDS type URLs are defined once, by the proxy.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SHARED_PRIVATE = ("meshproxy._gen",)


def _modules(package: str) -> Iterator[tuple[Path, ast.Module]]:
    paths = sorted((ROOT / package).rglob("*.py"))
    assert paths, f"no modules under {package}/"
    for path in paths:
        if "_gen" in path.relative_to(ROOT).parts:
            continue
        yield path.relative_to(ROOT), ast.parse(path.read_text(encoding="utf-8"), str(path))


def _imports(tree: ast.Module) -> Iterator[tuple[int, str, list[str]]]:
    """Every import in the module (functions included): (line, module, imported names)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module, [alias.name for alias in node.names]


def _is_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_proxy_imports_nothing_from_the_controlplane() -> None:
    found = [
        f"{path}:{line}: imports {module}"
        for path, tree in _modules("meshproxy")
        for line, module, _ in _imports(tree)
        if _is_package(module, "controlplane")
    ]
    assert found == []


def test_the_controlplane_uses_only_public_names_of_the_proxy() -> None:
    found = []
    for path, tree in _modules("controlplane"):
        for line, module, names in _imports(tree):
            if not _is_package(module, "meshproxy") or _is_package(module, SHARED_PRIVATE[0]):
                continue
            private = [p for p in module.split(".") if p.startswith("_")]
            private += [name for name in names if name.startswith("_")]
            if private:
                found.append(f"{path}:{line}: from {module} imports private {private}")
    assert found == []


def test_the_controlplane_does_not_redefine_the_xds_type_urls() -> None:
    type_urls = {"LISTENER", "ROUTE", "CLUSTER", "ENDPOINT"}
    found = [
        f"{path}:{node.lineno}: assigns {target.id}"
        for path, tree in _modules("controlplane")
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and target.id in type_urls
    ]
    assert found == []
