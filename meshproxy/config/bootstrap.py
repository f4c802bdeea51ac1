"""Reads a static bootstrap file (Envoy's v3 Bootstrap, YAML or JSON) and compiles it.

Owns the edge between text and protobuf: the bounds on hostile files (``limits``), YAML/JSON
syntax errors (with line numbers), duplicate keys, the document's shape against the Bootstrap
schema (``schema``: every wrong type, unknown field and enum name at once, with its field path),
then protobuf's json_format. Unknown fields are an error unless allowed, as in Envoy's
``--allow-unknown-static-fields`` (DESIGN.md decision 1). Everything after that is
``compile.compile_bootstrap``'s job. Must not depend on asyncio, sockets, or anything on the
request path.
"""

from __future__ import annotations

import contextlib
import json
import os
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
from google.protobuf import json_format

from meshproxy.config import limits
from meshproxy.config.compile import compile_bootstrap
from meshproxy.config.model import Config
from meshproxy.config.schema import check_message
from meshproxy.errors import ConfigError

__all__ = ["load_bootstrap", "parse_bootstrap"]


def load_bootstrap(path: str | os.PathLike[str], *, allow_unknown_fields: bool = False) -> Config:
    """Reads and compiles a bootstrap file; raises ConfigError (``source``: the path) listing
    every problem."""
    source = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read(limits.MAX_BYTES + 1)  # a bounded read: the path may be /dev/zero
        limits.check_size(len(data))
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else f"not UTF-8 text ({err.reason})"
        raise ConfigError([f"cannot read the bootstrap: {reason}"], source=source) from err
    except ConfigError as err:
        raise ConfigError(err.problems, source=source) from None
    return parse_bootstrap(text, source=source, allow_unknown_fields=allow_unknown_fields)


def parse_bootstrap(text: str, *, source: str | None = None, allow_unknown_fields: bool = False) -> Config:
    """Parses bootstrap text (YAML, or JSON) and compiles it; raises ConfigError.

    Every problem is "field.path: message" (or "line L, column C: …" for the text itself); the
    error's ``source`` is ``source``, said once rather than in each problem.
    """
    try:
        limits.check_size(len(text))
        document = load_document(text, source or "")
        checked = check_message(
            document, bootstrap_pb2.Bootstrap.DESCRIPTOR, allow_unknown_fields=allow_unknown_fields
        )
        msg = bootstrap_pb2.Bootstrap()
        try:  # unknown fields were reported, or are allowed
            json_format.ParseDict(document, msg, ignore_unknown_fields=True)
        except (json_format.ParseError, AttributeError, TypeError, ValueError) as err:
            # schema.check_message should have caught it first; say what protobuf said, once.
            raise ConfigError([*checked.problems, f"not a valid Bootstrap: {err}"]) from err
        try:
            config = compile_bootstrap(msg)
        except ConfigError as err:
            raise ConfigError(checked.problems + [p for p in err.problems if not checked.covers(p)]) from None
        if checked.problems:
            raise ConfigError(checked.problems)
        return config
    except ConfigError as err:
        raise ConfigError(err.problems, source=source) from None


# --------------------------------------------------------------------------- text


class _NoDuplicateKeys(yaml.constructor.SafeConstructor):
    """A loader mixin that refuses duplicate keys: YAML keeps the last silently, and a repeated
    ``clusters:`` would drop a whole section without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *defaults" is no key of its own
                continue
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


def load_document(text: str, source: str, what: str = "the bootstrap") -> dict[str, Any]:
    """The mapping a configuration text (YAML or JSON) holds, within ``limits``; ``what`` names
    it in the problems ("the bootstrap", "the LDS file")."""
    if not text.strip():
        raise ConfigError([f"{what} is empty"])
    # JSON is YAML, except that YAML refuses tab indentation; JSON-looking text is read as JSON.
    looks_json = source.endswith(".json") or text.lstrip().startswith("{")
    try:
        document = _load_json(text) if looks_json else _load_yaml(text)
    except json.JSONDecodeError as err:
        raise ConfigError([f"line {err.lineno}, column {err.colno}: JSON syntax error: {err.msg}"]) from err
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = f" ({err.context})" if err.context else ""
        raise ConfigError([f"{where}YAML error: {err.problem}{context}"]) from err
    except yaml.YAMLError as err:  # libyaml's own errors come without a mark
        raise ConfigError([f"YAML error: {err}"]) from err
    except ValueError as err:  # a duplicate JSON key
        raise ConfigError([str(err)]) from err
    if document is None:
        raise ConfigError([f"{what} is empty (only comments?)"])
    if not isinstance(document, dict):
        raise ConfigError([f"{what} must be a mapping of fields, not a {type(document).__name__}"])
    return document


def _load_json(text: str) -> Any:
    limits.check_json(text)
    return json.loads(text, object_pairs_hook=_json_object)


class _Loader(_NoDuplicateKeys, limits.FlowDepthSafeLoader):
    pass


class _FastLoader(_NoDuplicateKeys, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]  # a base chosen at import
    """libyaml's parser (about 10x faster on large files) with the same safe constructor."""


def _load_yaml(text: str) -> Any:
    """The document, once its event stream is within ``limits`` (before any object is built)."""
    return limits.load_yaml(text, _FastLoader, _Loader)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f'JSON syntax error: duplicate key "{key}"')
        result[key] = value
    return result
