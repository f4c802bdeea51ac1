"""Whether meshproxy uses its compiled extensions, and which ones are loaded.

Owns the single switch for the Cython fast paths (DESIGN.md decision 5): every dispatcher asks
:func:`load_twin` for its implementation, so ``MESHPROXY_NO_EXTENSIONS=1`` forces every
pure-Python twin at once, one module's own override (``OVERRIDES``, e.g.
``MESHPROXY_H2_CODEC=h2``) forces its twin alone, and :func:`extensions_status` (what the admin
``/server_info``, ``meshproxy version`` and the benchmarks record) reports the choice
:func:`load_twin` makes, so it never names a module as in use that a dispatcher passed over.
Depends only on the standard library; it must not import the modules it reports on until asked.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

NO_EXTENSIONS = bool(os.environ.get("MESHPROXY_NO_EXTENSIONS"))
if sys.implementation.name != "cpython":  # the extensions are CPython C-API modules
    NO_EXTENSIONS = True

# Every compiled module the project has; each ``X_c`` has a pure-Python twin ``X_py`` and a
# dispatcher that calls load_twin("X"). Keep in step with the list in setup.py (a unit test
# checks this against the .pyx files in the tree).
COMPILED_MODULES: tuple[str, ...] = (
    "meshproxy.upstream.lb._round_robin_c",
    "meshproxy.upstream.lb._least_request_c",
    "meshproxy.upstream.lb._random_lb_c",
    "meshproxy.upstream.lb._ring_hash_c",
    "meshproxy.upstream.lb._maglev_c",
    "meshproxy.http2._codec_c",
    "meshproxy.http._h1_c",
    "meshproxy.tls._records_c",
)

# Compiled modules an operator can turn off alone: the environment variable, and the value of it
# that selects the twin (docs/http2.md). Read when the dispatcher loads, as NO_EXTENSIONS is.
OVERRIDES: dict[str, tuple[str, str]] = {
    "meshproxy.http2._codec_c": ("MESHPROXY_H2_CODEC", "h2"),
}


def _compiled(name: str) -> ModuleType | None:
    """The compiled module ``name`` if it is to be used: built, importable, not turned off."""
    if NO_EXTENSIONS:
        return None
    override = OVERRIDES.get(name)
    if override is not None and os.environ.get(override[0]) == override[1]:
        return None
    try:
        return importlib.import_module(name)
    except ImportError:  # not built (no compiler or C library at install time), or another ABI
        return None


def load_twin(base: str) -> ModuleType:
    """Import ``base + "_c"``, or ``base + "_py"`` if extensions are off, its override asks for the
    twin, or it did not build."""
    compiled = base + "_c"
    if compiled not in COMPILED_MODULES:
        raise ValueError(f"{compiled} is not listed in meshproxy._ext.COMPILED_MODULES")
    module = _compiled(compiled)
    return module if module is not None else importlib.import_module(base + "_py")


def extensions_status() -> dict[str, bool]:
    """Map each compiled module's name to whether its dispatcher uses it (``load_twin``'s choice)."""
    return {name: _compiled(name) is not None for name in COMPILED_MODULES}
