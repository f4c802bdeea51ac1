"""Importing one twin of a compiled module directly (DESIGN decision 5), for the tests of both.

Owns the rule for a compiled twin that did not build: the test skips, unless
MESHPROXY_REQUIRE_EXTENSIONS is set (CI), where it fails.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def import_twin(base: str, kind: str) -> ModuleType:
    """Import ``base + "_c"`` or ``base + "_py"`` directly, bypassing the dispatcher.

    A missing compiled module skips, unless MESHPROXY_REQUIRE_EXTENSIONS is set (CI), where it
    fails so that an extension that silently did not build cannot pass as green.
    """
    name = f"{base}_{kind}"
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if kind != "c":
            raise
        message = f"{name} was not built ({exc})"
        if os.environ.get("MESHPROXY_REQUIRE_EXTENSIONS"):
            pytest.fail(message + " and MESHPROXY_REQUIRE_EXTENSIONS is set", pytrace=False)
        pytest.skip(message)
