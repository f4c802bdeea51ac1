"""What this meshproxy runs on: its version, Python, the event loop, the compiled extensions in use,
the HTTP/2 codec, and the OpenSSL the TLS engine drives.

Owns the one description both ``meshproxy version`` and the admin ``/server_info`` give, so an
operator reads the same answer from the command line and from a running proxy. The extensions
and the HTTP/2 codec are the choice ``meshproxy._ext`` makes for this process's environment
(``MESHPROXY_NO_EXTENSIONS``, ``MESHPROXY_H2_CODEC``), the one every dispatcher makes. Must not
depend on the server or the configuration.
"""

from __future__ import annotations

import asyncio
import platform
import sys
from typing import Any

from meshproxy import __version__
from meshproxy._ext import extensions_status, load_twin


def event_loop() -> str:
    """The running loop's implementation, or (outside one) the one ``meshproxy run`` would choose."""
    try:
        uses_uvloop = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    except RuntimeError:
        uses_uvloop = True  # run prefers uvloop when it is installed
    if uses_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return f"uvloop {uvloop.__version__}"
    return "asyncio"


def describe() -> dict[str, Any]:
    """The build and runtime facts, JSON-ready."""
    from OpenSSL import SSL

    return {
        "version": __version__,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": f"{sys.platform} {platform.machine()}",
        "event_loop": event_loop(),
        "openssl": SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode(),
        "http2_codec": load_twin("meshproxy.http2._codec").CODEC,
        "extensions": extensions_status(),
    }


def text(info: dict[str, Any]) -> str:
    """``describe()`` as lines for a terminal: one fact a line, then one extension a line."""
    lines = [f"{key.replace('_', ' ')}: {value}" for key, value in info.items() if key != "extensions"]
    lines.append("extensions:")
    lines += [f"  {name}: {'in use' if on else 'not in use'}" for name, on in info["extensions"].items()]
    return "\n".join(lines) + "\n"
