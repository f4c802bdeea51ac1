"""Configuration: Envoy's v3 Bootstrap read from a file, compiled into frozen runtime objects.

Owns nothing itself; it names the entry points. ``model`` is the runtime shape the data plane
reads (free of protobuf); ``bootstrap`` reads a file; ``compile`` and its ``compile_*`` parts
turn protos into the model. ``load_bootstrap`` and ``parse_bootstrap`` are imported lazily, so
that importing ``meshproxy.config.model`` on the request path never loads generated protobuf code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshproxy.config.bootstrap import load_bootstrap, parse_bootstrap

__all__ = ["load_bootstrap", "parse_bootstrap"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from meshproxy.config import bootstrap

        return getattr(bootstrap, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
