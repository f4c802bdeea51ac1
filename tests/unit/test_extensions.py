"""The compiled-extension switch: CI's check that no extension silently failed to build.

Run under MESHPROXY_REQUIRE_EXTENSIONS=1 (CI), every module in ``_ext.COMPILED_MODULES`` must be
loaded; under MESHPROXY_NO_EXTENSIONS=1 every dispatcher must have chosen its Python twin.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshproxy import _ext
from meshproxy.upstream.lb import _round_robin_py, round_robin

PACKAGE_ROOT = Path(_ext.__file__).resolve().parent
REQUIRE = bool(os.environ.get("MESHPROXY_REQUIRE_EXTENSIONS"))
DISABLED = bool(os.environ.get("MESHPROXY_NO_EXTENSIONS"))


def test_every_pyx_is_listed() -> None:
    on_disk = {
        "meshproxy." + ".".join(path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
        for path in PACKAGE_ROOT.rglob("*.pyx")
    }
    assert on_disk == set(_ext.COMPILED_MODULES)


def test_every_compiled_module_has_a_twin() -> None:
    for name in _ext.COMPILED_MODULES:
        assert name.endswith("_c")
        importlib.import_module(name.removesuffix("_c") + "_py")


def test_status_reports_every_module() -> None:
    assert set(_ext.extensions_status()) == set(_ext.COMPILED_MODULES)


def test_dispatcher_agrees_with_status() -> None:
    loaded = _ext.extensions_status()["meshproxy.upstream.lb._round_robin_c"]
    expected = "meshproxy.upstream.lb._round_robin_c" if loaded else "meshproxy.upstream.lb._round_robin_py"
    assert round_robin.RoundRobin.__module__ == expected


def test_load_twin_refuses_unlisted_module() -> None:
    with pytest.raises(ValueError, match="COMPILED_MODULES"):
        _ext.load_twin("meshproxy.upstream.lb._nonexistent")


@pytest.mark.skipif(not REQUIRE, reason="MESHPROXY_REQUIRE_EXTENSIONS is not set")
@pytest.mark.skipif(DISABLED, reason="MESHPROXY_NO_EXTENSIONS is set")
@pytest.mark.parametrize("name", _ext.COMPILED_MODULES)
def test_required_extension_is_loaded(name: str) -> None:
    if not _ext.extensions_status()[name]:
        importlib.import_module(name)  # raises with the reason it did not load
        pytest.fail(f"{name} imports but meshproxy._ext does not use it")


@pytest.mark.skipif(not DISABLED, reason="MESHPROXY_NO_EXTENSIONS is not set")
def test_no_extensions_selects_the_twins() -> None:
    assert _ext.NO_EXTENSIONS
    assert not any(_ext.extensions_status().values())
    assert round_robin.RoundRobin is _round_robin_py.RoundRobin


def test_no_extensions_env_selects_every_twin_even_where_extensions_are_required() -> None:
    """CI's second run (``make test-twins``) in miniature, in every run: both switches set, a
    fresh interpreter must put every dispatcher on its twin and report nothing loaded."""
    probe = (
        "from meshproxy import _ext; from meshproxy.upstream.lb import round_robin; "
        "print(_ext.NO_EXTENSIONS, any(_ext.extensions_status().values()), round_robin.RoundRobin.__module__)"
    )
    env = {**os.environ, "MESHPROXY_NO_EXTENSIONS": "1", "MESHPROXY_REQUIRE_EXTENSIONS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(PACKAGE_ROOT.parent), env.get("PYTHONPATH"))))
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "meshproxy.upstream.lb._round_robin_py"]


def test_h2_codec_dispatcher_agrees_with_status() -> None:
    """The HTTP/2 codec is the compiled one wherever status says it is in use, and only there."""
    from meshproxy.http2 import connection

    loaded = _ext.extensions_status()["meshproxy.http2._codec_c"]
    expected = "meshproxy.http2._codec_c" if loaded else "meshproxy.http2._codec_py"
    assert connection.CODEC.__name__ == expected


def test_h2_codec_override_selects_the_twin_and_status_says_so() -> None:
    """``MESHPROXY_H2_CODEC=h2`` runs h2 and the status no longer counts libnghttp2 as in use."""
    probe = (
        "from meshproxy import _ext; from meshproxy.http2 import connection; "
        "print(_ext.extensions_status()['meshproxy.http2._codec_c'], connection.CODEC.__name__)"
    )
    env = {**os.environ, "MESHPROXY_H2_CODEC": "h2"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(PACKAGE_ROOT.parent), env.get("PYTHONPATH"))))
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "meshproxy.http2._codec_py"]
