"""Configuration: Envoy's v3 Bootstrap read from a file, compiled into frozen runtime objects.

Owns nothing itself; it names the entry points. ``model`` is the runtime shape the data plane
reads (free of protobuf); ``bootstrap`` reads a file; ``compile`` and its ``compile_*`` parts
turn protos into the model. The public names below are imported lazily, so that importing
``meshproxy.config.model`` on the request path never loads generated protobuf code.

Besides the bootstrap loaders, the readers every Envoy-shaped file shares (the controlplane's
``--xds-resources`` files use them, so that one behaviour holds for every such file):
``load_yaml`` (YAML text, duplicate keys refused), ``json_object`` (a ``json.loads``
``object_pairs_hook`` refusing duplicate keys) and ``check_message`` (every problem of a parsed
document against a message's descriptor, each with its field path, ``@type`` URLs resolved).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshproxy.config.bootstrap import _json_object as json_object
    from meshproxy.config.bootstrap import _load_yaml as load_yaml
    from meshproxy.config.bootstrap import load_bootstrap, parse_bootstrap
    from meshproxy.config.schema import check_message

# Public name -> (module, its definition there).
_EXPORTS = {
    "load_bootstrap": ("bootstrap", "load_bootstrap"),
    "parse_bootstrap": ("bootstrap", "parse_bootstrap"),
    "load_yaml": ("bootstrap", "_load_yaml"),
    "json_object": ("bootstrap", "_json_object"),
    "check_message": ("schema", "check_message"),
}
__all__ = ["check_message", "json_object", "load_bootstrap", "load_yaml", "parse_bootstrap"]


def __getattr__(name: str) -> Any:
    # Loaded on first use (not at import): see the module docstring.
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(f"meshproxy.config.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
