"""The errors of sidecar mode.

Owns ``CaptureError``; depends only on the project-wide hierarchy in ``meshproxy.errors``.
"""

from __future__ import annotations

from meshproxy.errors import MeshproxyError


class CaptureError(MeshproxyError):
    """A capture could not be described or installed; the message names the flag or command."""
