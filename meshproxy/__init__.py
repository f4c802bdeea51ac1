"""meshproxy: a post-quantum service-mesh sidecar proxy configured by Envoy's xDS v3 API."""

from __future__ import annotations

__version__ = "0.1.0"
