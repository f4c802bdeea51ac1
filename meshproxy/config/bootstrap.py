"""Reads a static bootstrap file (Envoy's v3 Bootstrap, YAML or JSON) and compiles it.

Owns the edge between text and protobuf: YAML/JSON syntax errors (with line numbers), duplicate
keys, resolving the ``@type`` of every ``typed_config``, protobuf's ParseError (turned into a
field path), and enum values protobuf would silently drop. Unknown fields are ignored, as
DESIGN.md decides. Everything after that is ``compile.compile_bootstrap``'s job.
Must not depend on asyncio, sockets, or anything on the request path.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# The typed_config messages meshproxy compiles: imported so their ``@type`` resolves.
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from meshproxy.config.compile import compile_bootstrap
from meshproxy.config.model import Config
from meshproxy.errors import ConfigError

__all__ = ["load_bootstrap", "parse_bootstrap"]

_POOL = descriptor_pool.Default()
# Packages whose generated modules may be imported to resolve a typed_config's @type.
_RESOLVABLE_ROOTS = ("envoy.", "xds.", "udpa.")


def load_bootstrap(path: str | os.PathLike[str]) -> Config:
    """Reads and compiles a bootstrap file; raises ConfigError listing every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else f"not UTF-8 text ({err.reason})"
        raise ConfigError([f"{os.fspath(path)}: cannot read the bootstrap: {reason}"]) from err
    return parse_bootstrap(text, source=os.fspath(path))


def parse_bootstrap(text: str, *, source: str = "<string>") -> Config:
    """Parses bootstrap text (YAML, or JSON) and compiles it; raises ConfigError.

    Problems found while reading the text start with ``source``; problems in the configuration
    itself are "field.path: message", as everywhere else.
    """
    document = _load_document(text, source)
    type_urls = [(path, value) for path, names, value in _fields(document, "", []) if names[-1] == "@type"]
    if not_urls := [path for path, value in type_urls if not isinstance(value, str)]:
        raise ConfigError([f"{source}: {path}: must be a type URL string" for path in not_urls])
    for _, url in type_urls:
        _resolve_type(url)
    msg = bootstrap_pb2.Bootstrap()
    try:
        json_format.ParseDict(document, msg, ignore_unknown_fields=True)
    except json_format.ParseError as err:
        raise ConfigError([f"{source}: {_describe_parse_error(str(err), document)}"]) from err
    except (AttributeError, TypeError, ValueError) as err:  # protobuf slipping on odd input
        raise ConfigError([f"{source}: not a valid Bootstrap ({type(err).__name__}: {err})"]) from err
    problems: list[str] = []
    _check_enums(document, bootstrap_pb2.Bootstrap.DESCRIPTOR, "", problems)
    try:
        config = compile_bootstrap(msg)
    except ConfigError as err:
        raise ConfigError(problems + err.problems) from err
    if problems:
        raise ConfigError(problems)
    return config


# --------------------------------------------------------------------------- text


class _NoDuplicateKeys:
    """A loader mixin that refuses duplicate keys: YAML keeps the last silently, and a repeated
    ``clusters:`` would drop a whole section without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            with contextlib.suppress(TypeError):  # unhashable keys fail below, as usual
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (first on line {seen[key] + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _load_document(text: str, source: str) -> dict[str, Any]:
    if not text.strip():
        raise ConfigError([f"{source}: the bootstrap is empty"])
    # JSON is YAML, except that YAML refuses tab indentation; JSON-looking text is read as JSON.
    looks_json = source.endswith(".json") or text.lstrip().startswith("{")
    try:
        document = json.loads(text, object_pairs_hook=_json_object) if looks_json else _load_yaml(text)
    except json.JSONDecodeError as err:
        raise ConfigError([f"{source}:{err.lineno}:{err.colno}: JSON syntax error: {err.msg}"]) from err
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        context = f" ({err.context})" if err.context else ""
        raise ConfigError([f"{where}: YAML error: {err.problem}{context}"]) from err
    except ValueError as err:  # a duplicate JSON key
        raise ConfigError([f"{source}: {err}"]) from err
    if document is None:
        raise ConfigError([f"{source}: the bootstrap is empty (only comments?)"])
    if not isinstance(document, dict):
        raise ConfigError(
            [f"{source}: the bootstrap must be a mapping (Bootstrap fields), not a {type(document).__name__}"]
        )
    return document


class _Loader(_NoDuplicateKeys, yaml.SafeLoader):
    pass


class _FastLoader(_NoDuplicateKeys, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's parser (about 10x faster on large files) with the same safe constructor."""


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_FastLoader)  # safe: a SafeLoader
    except yaml.YAMLError:
        # The pure-Python parser words syntax errors better (it names the character).
        return yaml.load(text, Loader=_Loader)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f'JSON syntax error: duplicate key "{key}"')
        result[key] = value
    return result


# --------------------------------------------------------------------------- protobuf


def _resolve_type(url: str) -> None:
    """Imports the generated module defining ``url``'s message, so that a filter meshproxy does
    not run still parses, and the compiler can name it with its field path (rather than
    protobuf stopping at the first unknown @type). Only xds-protos' own packages are searched."""
    name = url.rsplit("/", 1)[-1]
    if not name.startswith(_RESOLVABLE_ROOTS) or _find_message(name):
        return
    package = name.rsplit(".", 1)[0]
    with contextlib.suppress(ImportError, ValueError):
        search_path = getattr(importlib.import_module(package), "__path__", ())  # () for a module
        for module in pkgutil.iter_modules(search_path):
            if module.name.endswith("_pb2"):
                importlib.import_module(f"{package}.{module.name}")
                if _find_message(name):
                    return


def _find_message(name: str) -> Descriptor | None:
    try:
        return _POOL.FindMessageTypeByName(name)
    except KeyError:
        return None


def _describe_parse_error(text: str, document: dict[str, Any]) -> str:
    """protobuf's "Failed to parse a field: Failed to parse b field: <reason> at Bootstrap.a[0].b."
    as "a[0].b: <reason>". Some errors come without the located path, only the chain of field
    names (which may skip a level); then the one place in the document that fits is named."""
    chain = re.findall(r"Failed to parse (\w+) field: ", text)
    reason = re.sub(r"^(Failed to parse \w+ field: )+", "", text)
    located = re.search(r' at "?Bootstrap\.([^"\s]+?)"?\.*$', reason)
    reason = (reason[: located.start()] if located else reason).rstrip(".")
    if located:
        path = located[1]
        last = re.sub(r"\[.*\]$", "", path.rsplit(".", 1)[-1])
        tail = chain[len(chain) - chain[::-1].index(last) :] if last in chain else []
        return f"{'.'.join([path, *tail])}: {reason}"
    if not chain:
        return reason
    return f"{_locate(document, chain, reason) or '.'.join(chain)}: {reason}"


def _locate(document: dict[str, Any], chain: list[str], reason: str) -> str | None:
    """The path of the one field whose key path contains ``chain`` in order and ends with it
    (of several, the one whose value the reason quotes), or None when that is ambiguous."""
    fits = [
        (path, value)
        for path, names, value in _fields(document, "", [])
        if names[-1] == chain[-1] and _in_order(chain, names)
    ]
    if len(fits) > 1:
        fits = [(path, value) for path, value in fits if _quoted(value, reason)]
    return fits[0][0] if len(fits) == 1 else None


def _quoted(value: Any, reason: str) -> bool:
    """Whether protobuf's reason names this value ("Value out of range: 70000") or its type
    ("got 'int'")."""
    return str(value) in reason or f"'{type(value).__name__}'" in reason


def _fields(node: Any, path: str, names: list[str]) -> Iterator[tuple[str, list[str], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            yield here, [*names, str(key)], value
            yield from _fields(value, here, [*names, str(key)])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _fields(value, f"{path}[{index}]", names)


def _in_order(wanted: list[str], names: list[str]) -> bool:
    remaining = iter(names)
    return all(name in remaining for name in wanted)


def _check_enums(node: Any, descriptor: Descriptor, path: str, problems: list[str]) -> None:
    """Reports enum names the proto does not define: with ignore_unknown_fields, protobuf drops
    them silently, and a misspelt ``lb_policy`` would quietly become ROUND_ROBIN."""
    if not isinstance(node, dict):
        return
    if descriptor.full_name == "google.protobuf.Any":
        descriptor = _find_message(str(node.get("@type", "")).rsplit("/", 1)[-1])  # type: ignore[assignment]
    if descriptor is None or descriptor.full_name.startswith("google.protobuf."):
        return
    fields = {f.json_name: f for f in descriptor.fields} | dict(descriptor.fields_by_name)
    for key, value in node.items():
        field = fields.get(key)
        if field is None:
            continue
        here = f"{path}.{field.name}" if path else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            field = field.message_type.fields_by_name["value"]
            items = [(f'{here}["{k}"]', v) for k, v in value.items()] if isinstance(value, dict) else []
        elif field.is_repeated:
            items = [(f"{here}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else []
        else:
            items = [(here, value)]
        for item_path, item in items:
            _check_enum_value(item, field, item_path, problems)


def _check_enum_value(value: Any, field: FieldDescriptor, path: str, problems: list[str]) -> None:
    if field.enum_type is None:
        if field.message_type is not None:
            _check_enums(value, field.message_type, path, problems)
    elif isinstance(value, str) and value not in field.enum_type.values_by_name:
        expected = ", ".join(v.name for v in field.enum_type.values)
        problems.append(f'{path}: unknown value "{value}"; expected one of {expected}')
