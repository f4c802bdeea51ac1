"""Whether meshproxy uses its compiled extensions, and which ones are loaded.

Owns the single switch for the Cython fast paths (DESIGN.md decision 5): every dispatcher asks
:func:`load_twin` for its implementation, so ``MESHPROXY_NO_EXTENSIONS=1`` forces every
pure-Python twin at once, and :func:`extensions_status` is what the admin endpoint and the
benchmarks record. Depends only on the standard library; it must not import the modules it
reports on until asked.
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
)


def load_twin(base: str) -> ModuleType:
    """Import ``base + "_c"``, or ``base + "_py"`` if extensions are off or it did not build."""
    compiled = base + "_c"
    if compiled not in COMPILED_MODULES:
        raise ValueError(f"{compiled} is not listed in meshproxy._ext.COMPILED_MODULES")
    if not NO_EXTENSIONS:
        try:
            return importlib.import_module(compiled)
        except ImportError:  # not built (no compiler at install time) or built for another ABI
            pass
    return importlib.import_module(base + "_py")


def extensions_status() -> dict[str, bool]:
    """Map each compiled module's name to whether it is in use (importable and not disabled)."""
    status: dict[str, bool] = {}
    for name in COMPILED_MODULES:
        loaded = False
        if not NO_EXTENSIONS:
            try:
                importlib.import_module(name)
                loaded = True
            except ImportError:
                pass
        status[name] = loaded
    return status
