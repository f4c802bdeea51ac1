"""Bounds on a configuration file, checked before any object is built from its text.

Owns the defence against hostile files: a size cap, a nesting-depth cap and a cap on the nodes
YAML aliases expand to ("billion laughs": nine levels of ten aliases are 600 bytes of text and
10⁹ nodes to any consumer that walks the document). The YAML check walks libyaml's event stream,
which is flat (no recursion, no objects built), keeping per anchor the size and depth of the node
it names, so an alias costs O(1) to account for however much it expands to. The JSON check scans
brackets outside strings. Each refusal is one ``ConfigError`` problem saying where and which bound.
Must not depend on protobuf, asyncio, or anything on the request path.

The bounds are generous for real bootstraps (a route's header mutation in an inline route table
nests 21 levels) and small enough that everything after them (the schema
walk, protobuf, the compiler, each recursive) runs in bounded time and stack.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from meshproxy.errors import ConfigError

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "FlowDepthSafeLoader",
    "check_json",
    "check_size",
    "check_yaml_events",
    "load_yaml",
]

MAX_BYTES = 4 * 1024 * 1024
"""The largest configuration file read (4 MiB)."""
MAX_DEPTH = 48
"""The deepest nesting of lists and mappings, counting what aliases expand to. protobuf's JSON
parser stops at 100 nested messages, and each level of a Struct (metadata) is two (a Value and a
Struct or ListValue): 48 keeps every document within it."""
MAX_NODES = 1_000_000
"""The most nodes (scalars, lists, mappings) a YAML document may hold once aliases are expanded."""

_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def check_size(size: int) -> None:
    if size > MAX_BYTES:
        raise ConfigError(
            [f"the file is larger than {MAX_BYTES // (1024 * 1024)} MiB, the most meshproxy reads"]
        )


def check_json(text: str) -> None:
    """Refuses JSON nested deeper than MAX_DEPTH (Python's json module would end in RecursionError
    near 1,000 levels, and everything after it recurses too)."""
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        bracket = token[0]
        if bracket in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, token.start()) + 1
                column = token.start() - text.rfind("\n", 0, token.start())
                raise ConfigError([f"line {line}, column {column}: {_too_deep()}"])
        elif bracket in "]}":
            depth -= 1


@dataclass(slots=True)
class _Node:
    """A list or mapping being read: how many nodes it holds (itself included) and how deep it
    goes (1 for a scalar)."""

    anchor: str | None
    size: int = 1
    depth: int = 1


def check_yaml_events(events: Iterable[yaml.Event]) -> None:
    """Refuses a YAML event stream whose nesting or alias expansion exceeds the bounds.

    Raises the parser's yaml.YAMLError for a syntax error, as loading would."""
    anchors: dict[str, _Node] = {}
    open_nodes: list[_Node] = []
    total = 0
    for event in events:
        if isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append(_Node(event.anchor))
            if len(open_nodes) > MAX_DEPTH:
                raise ConfigError([f"{_where(event)}: {_too_deep()}"])
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            node = open_nodes.pop()
        elif isinstance(event, yaml.ScalarEvent):
            node = _Node(event.anchor)
        elif isinstance(event, yaml.AliasEvent):
            if any(node.anchor == event.anchor for node in open_nodes):
                raise ConfigError([f"{_where(event)}: alias *{event.anchor} is inside the node it names"])
            node = anchors.get(event.anchor or "", _Node(None))  # an unknown alias fails on loading
            if len(open_nodes) + node.depth > MAX_DEPTH:
                raise ConfigError([f"{_where(event)}: alias *{event.anchor}: {_too_deep()}"])
            node = _Node(None, node.size, node.depth)
        else:
            continue
        total += node.size if isinstance(event, yaml.AliasEvent) else 1
        if total > MAX_NODES:
            raise ConfigError(
                [
                    f"{_where(event)}: the document expands to more than {MAX_NODES:,} nodes "
                    "(YAML aliases repeat what they name); meshproxy refuses it"
                ]
            )
        if node.anchor is not None:
            anchors[node.anchor] = node
        if open_nodes:
            parent = open_nodes[-1]
            parent.size += node.size
            parent.depth = max(parent.depth, node.depth + 1)


class FlowDepthSafeLoader(yaml.SafeLoader):
    """PyYAML's pure-Python safe loader, refusing flow lists and mappings nested deeper than
    ``MAX_DEPTH`` as it scans them. Its scanner looks up to 1,024 characters ahead for a simple
    key and re-checks every open flow level at each token, so ``[[[[…`` cost it levels x
    characters (0.2 s of CPU for 10 KiB of ``[``, found by the config fuzzers) before
    ``check_yaml_events`` saw the first level too many."""

    def fetch_flow_collection_start(self, TokenClass: type[yaml.Token]) -> None:
        if self.flow_level >= MAX_DEPTH:
            mark = self.get_mark()
            raise ConfigError([f"line {mark.line + 1}, column {mark.column + 1}: {_too_deep()}"])
        super().fetch_flow_collection_start(TokenClass)


def _where(event: yaml.Event) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "the document"


def _too_deep() -> str:
    return f"lists and mappings nested deeper than {MAX_DEPTH} levels; meshproxy refuses it"


def load_yaml(text: str, fast: type[Any], slow: type[Any]) -> Any:
    """The document ``text`` holds, once its event stream is within the bounds (before any object
    is built), read by the loader class ``fast`` (libyaml's, about 10x faster); a text it refuses
    is read again by ``slow`` (PyYAML's pure-Python parser, which words syntax errors better: it
    names the character) so that the error raised is the better one."""
    try:
        check_yaml_events(yaml.parse(text, Loader=fast))
        return yaml.load(text, Loader=fast)  # safe: both are safe loaders
    except yaml.YAMLError:
        check_yaml_events(yaml.parse(text, Loader=slow))
        return yaml.load(text, Loader=slow)
