"""Build script for meshproxy's optional C extensions; all other metadata is in pyproject.toml.

Owns how the Cython fast paths are compiled. Each one is a line in ``CYTHON_MODULES``. The
sources are the ``.pyx`` files, cythonized when Cython is importable (Cython rewrites a ``.c``
only when its ``.pyx`` is newer), otherwise a shipped ``.c`` beside it (an sdist carries them).

Compiling is optional: with no C compiler or no Python headers, ``OptionalBuildExt`` prints a
warning and the package installs with its pure-Python twins, which ``meshproxy._ext`` then
selects. CI sets ``MESHPROXY_REQUIRE_EXTENSIONS=1`` so that such a silent fallback fails the
tests. ``MESHPROXY_NO_EXTENSIONS=1`` at build time skips compiling altogether.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

# The compiled modules, one per line; keep in step with meshproxy._ext.COMPILED_MODULES.
CYTHON_MODULES = [
    "meshproxy.upstream.lb._round_robin_c",
    "meshproxy.upstream.lb._least_request_c",
    "meshproxy.upstream.lb._random_lb_c",
    "meshproxy.upstream.lb._ring_hash_c",
    "meshproxy.upstream.lb._maglev_c",
    "meshproxy.http2._codec_c",
    "meshproxy.http._h1_c",
    "meshproxy.tls._records_c",
]

# C libraries a module links, and the Debian package whose headers it needs. Without the headers
# its compile fails and OptionalBuildExt drops it, as for any failed module (its twin is used).
LIBRARIES = {"meshproxy.http2._codec_c": ("nghttp2", "libnghttp2-dev")}

HERE = Path(__file__).resolve().parent
NO_EXTENSIONS = bool(os.environ.get("MESHPROXY_NO_EXTENSIONS")) or sys.implementation.name != "cpython"


def _warn(message: str) -> None:
    bar = "*" * 75
    print(f"\n{bar}\nWARNING: {message}\n{bar}\n", file=sys.stderr)


def extensions() -> list[Extension]:
    """The Extension objects to build: cythonized from .pyx, or from shipped .c files."""
    if NO_EXTENSIONS:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        cythonize = None
    modules = []
    for name in CYTHON_MODULES:
        stem = name.replace(".", "/")
        libraries = [LIBRARIES[name][0]] if name in LIBRARIES else []
        if cythonize is not None:
            modules.append(Extension(name, [stem + ".pyx"], libraries=libraries))
        elif (HERE / (stem + ".c")).exists():
            modules.append(Extension(name, [stem + ".c"], libraries=libraries))
        else:
            _warn(f"Cython is not installed and {stem}.c is missing: {name} will not be compiled.")
    if cythonize is None or not modules:
        return modules
    return cythonize(modules, language_level=3)


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when a module cannot be compiled.

    A module that failed is dropped from ``self.extensions`` once the build loop is over, so
    nothing later (copying into the source tree for an editable install, listing the wheel's
    outputs) looks for its file.
    """

    def run(self) -> None:
        try:
            super().run()
        except PlatformError as exc:  # no compiler toolchain configured at all
            self._warn_fallback("the C extensions", exc)

    def build_extensions(self) -> None:
        self._failed: set[str] = set()
        super().build_extensions()
        self.extensions = [ext for ext in self.extensions if ext.name not in self._failed]

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, ExecError, PlatformError, ValueError) as exc:
            self._failed.add(ext.name)
            self._warn_fallback(ext.name, exc, LIBRARIES.get(ext.name, ("", ""))[1])

    @staticmethod
    def _warn_fallback(what: str, exc: Exception, package: str = "") -> None:
        needs = f"gcc, python3-dev and {package}" if package else "gcc and python3-dev"
        _warn(
            f"could not compile {what} ({type(exc).__name__}: {exc}).\n"
            "meshproxy will use its pure-Python implementation, which is correct but slower.\n"
            f"Install a C compiler, the Python headers and the libraries (e.g. {needs}) and\n"
            "reinstall to get the compiled fast paths."
        )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
