"""Configuration: Envoy's v3 Bootstrap read from a file, compiled into frozen runtime objects.

Owns nothing itself; it names the entry points. ``model`` is the runtime shape the data plane
reads (free of protobuf); ``bootstrap`` reads a file; ``compile`` and its ``compile_*`` parts
turn protos into the model. The public names below are imported lazily, so that importing
``meshproxy.config.model`` on the request path never loads generated protobuf code.

Besides the bootstrap loaders, the readers every Envoy-shaped file shares (the controlplane's
``--xds-resources`` files use them, so that one behaviour holds for every such file):
``load_yaml`` (YAML text, duplicate keys refused), ``json_object`` (a ``json.loads``
``object_pairs_hook`` refusing duplicate keys), ``iter_fields`` (every ``(path, names, value)``
of a parsed document) and ``resolve_type`` (imports the generated module of a ``@type`` URL so
that ``json_format`` can parse an ``Any`` holding it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshproxy.config.bootstrap import _fields as iter_fields
    from meshproxy.config.bootstrap import _json_object as json_object
    from meshproxy.config.bootstrap import _load_yaml as load_yaml
    from meshproxy.config.bootstrap import _resolve_type as resolve_type
    from meshproxy.config.bootstrap import load_bootstrap, parse_bootstrap

# Public name -> its definition in ``bootstrap``.
_EXPORTS = {
    "load_bootstrap": "load_bootstrap",
    "parse_bootstrap": "parse_bootstrap",
    "load_yaml": "_load_yaml",
    "json_object": "_json_object",
    "iter_fields": "_fields",
    "resolve_type": "_resolve_type",
}
__all__ = ["iter_fields", "json_object", "load_bootstrap", "load_yaml", "parse_bootstrap", "resolve_type"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from meshproxy.config import bootstrap

        return getattr(bootstrap, _EXPORTS[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
