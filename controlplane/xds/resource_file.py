"""Raw xDS resource files (``controlplane serve --xds-resources FILE``): JSON or YAML, parsed into
the xds-protos messages the snapshot serves as given.

Owns the file format: a document ``{"resources": [...]}`` or a plain list, each entry one resource
with its ``@type`` (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment, Secret), parsed
with ``google.protobuf.json_format``. A resource is named by its ``name`` (``cluster_name`` for a
ClusterLoadAssignment). Every problem is reported at once, as ``FILE: resources[i] (@type):
message``, in a `meshproxy.errors.ConfigError`; the snapshot's consistency check is the cache's.

Must not depend on: the cache, the server, grpc.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from controlplane.xds.snapshot import MESSAGES, Resources, resource_name

# The text readers and @type resolution are the proxy's bootstrap loader's: one behaviour for
# every Envoy-shaped file (duplicate keys refused, extension types imported on demand).
from meshproxy.config import check_message, json_object, load_yaml
from meshproxy.errors import ConfigError

_BY_NAME = {url.rsplit("/", 1)[-1]: url for url in MESSAGES}


def load_resource_file(path: str | os.PathLike[str]) -> Resources:
    """Reads and parses a resource file; raises ConfigError listing every problem."""
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else f"not UTF-8 text ({err.reason})"
        raise ConfigError([f"{source}: cannot read the resource file: {reason}"]) from err
    return parse_resources(text, source=source)


def parse_resources(text: str, *, source: str = "<string>") -> Resources:
    entries = _entries(_load(text, source), source)
    resources: Resources = {}
    problems: list[str] = []
    for index, entry in enumerate(entries):
        where = f"{source}: resources[{index}]"
        parsed = _parse_entry(entry, where, problems)
        if parsed is None:
            continue
        type_url, message = parsed
        name = resource_name(message)
        field = "cluster_name" if type_url.endswith("ClusterLoadAssignment") else "name"
        by_name = resources.setdefault(type_url, {})
        if not name:
            problems.append(f"{where} ({_short(type_url)}): {field}: required")
        elif name in by_name:
            problems.append(f"{where} ({_short(type_url)}): {field}: {name!r} is defined twice")
        else:
            by_name[name] = message
    if problems:
        raise ConfigError(problems)
    return {t: by_name for t, by_name in resources.items() if by_name}


def _load(text: str, source: str) -> Any:
    looks_json = source.endswith(".json") or text.lstrip()[:1] in ("{", "[")
    try:
        return json.loads(text, object_pairs_hook=json_object) if looks_json else load_yaml(text)
    except json.JSONDecodeError as err:
        raise ConfigError([f"{source}:{err.lineno}:{err.colno}: JSON syntax error: {err.msg}"]) from err
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError([f"{where}: YAML error: {err.problem}"]) from err
    except (ValueError, yaml.YAMLError) as err:
        raise ConfigError([f"{source}: {err}"]) from err


def _entries(document: Any, source: str) -> list[Any]:
    if document is None:
        return []
    if isinstance(document, dict):
        unknown = sorted(set(document) - {"resources"})
        if unknown:
            raise ConfigError([f"{source}: unknown top-level key(s) {unknown}; expected 'resources'"])
        document = document.get("resources") or []
    if not isinstance(document, list):
        raise ConfigError(
            [
                f"{source}: expected a list of resources or {{'resources': [...]}}, "
                f"not a {type(document).__name__}"
            ]
        )
    return document


def _parse_entry(entry: Any, where: str, problems: list[str]) -> tuple[str, Any] | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be a mapping with '@type', not a {type(entry).__name__}")
        return None
    type_url = entry.get("@type")
    if not isinstance(type_url, str) or not type_url:
        problems.append(f"{where}: @type: required (e.g. {next(iter(MESSAGES))!r})")
        return None
    type_url = _BY_NAME.get(type_url, type_url)  # a bare message name is accepted too
    cls = MESSAGES.get(type_url)
    if cls is None:
        problems.append(f"{where}: @type: {type_url!r} is not one of {sorted(MESSAGES)}")
        return None
    body = {k: v for k, v in entry.items() if k != "@type"}
    if schema_problems := check_message(body, cls.DESCRIPTOR).problems:
        problems.extend(f"{where} ({_short(type_url)}): {problem}" for problem in schema_problems)
        return None
    message = cls()
    try:
        json_format.ParseDict(body, message)
    except json_format.ParseError as err:
        problems.append(f"{where} ({_short(type_url)}): {err}")
        return None
    except (AttributeError, TypeError, ValueError) as err:  # protobuf slipping on odd input
        problems.append(f"{where} ({_short(type_url)}): {type(err).__name__}: {err}")
        return None
    return type_url, message


def _short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]
