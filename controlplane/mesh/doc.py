"""The mesh YAML's reading primitives: a cursor that knows its path and collects problems, the
YAML 1.2 boolean loader, and the scalar readers (strings, names, integers, ports, durations,
choices, addresses) that report a bad value as ``path: reason`` and return a harmless default.

``load.py`` composes these into the mesh's rules. Must not depend on: protobuf, grpc, asyncio,
the mesh model beyond its ``Address`` alias.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from controlplane.mesh.model import Address
from meshproxy.config import limits

T = TypeVar("T")
S = TypeVar("S", bound=str)

NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class Doc:
    """A cursor into the document that knows its path and collects problems."""

    def __init__(self, value: Any, path: str, problems: list[str]) -> None:
        self.value, self.path, self.problems = value, path, problems

    def problem(self, message: str) -> None:
        self.problems.append(f"{self.path or '(document)'}: {message}")

    def child(self, key: str | int) -> Doc:
        path = f"{self.path}[{key}]" if isinstance(key, int) else f"{self.path}.{key}" if self.path else key
        value = self.value.get(key) if isinstance(self.value, dict) else self.value[key]
        return Doc(value, path, self.problems)

    def mapping(self, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> bool:
        """Whether this is a mapping; reports unknown and missing keys."""
        if not isinstance(self.value, dict):
            self.problem(f"must be a mapping, not {kind(self.value)}")
            return False
        for key in self.value:
            if key not in allowed:
                self.problem(f"unknown key {key!r}; expected one of: {', '.join(allowed)}")
        for key in required:
            if key not in self.value:
                self.problem(f"{key!r} is required")
        return True

    def items(self) -> list[Doc]:
        if not isinstance(self.value, list):
            self.problem(f"must be a list, not {kind(self.value)}")
            return []
        return [self.child(i) for i in range(len(self.value))]

    def get(self, key: str, read: Callable[[Doc], T], default: T) -> T:
        if not isinstance(self.value, dict) or self.value.get(key) is None:
            return default
        return read(self.child(key))


class Loader(limits.FlowDepthSafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans: only ``true`` and ``false`` (any case
    PyYAML's resolver knows: ``true``, ``True``, ``TRUE``). YAML 1.1 also reads ``on``, ``off``,
    ``yes`` and ``no`` as booleans, which turned ``pq: off`` into ``False`` and a ``retries``
    ``on:`` key into ``True``; here they stay the words the user wrote."""


class FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]  # a base chosen at import
    """``Loader``'s resolvers on libyaml's parser (about 10x faster; ``limits.load_yaml``)."""


_BOOL = "tag:yaml.org,2002:bool"
for _loader in (Loader, FastLoader):
    _loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


# ----------------------------------------------------------------------------- scalars


def kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def string(d: Doc) -> str:
    if not isinstance(d.value, str) or not d.value:
        d.problem(f"must be a non-empty string, not {kind(d.value)}")
        return ""
    return d.value


def boolean(d: Doc) -> bool:
    if not isinstance(d.value, bool):
        d.problem(f"must be true or false, not {kind(d.value)}")
        return False
    return d.value


def dns_name(d: Doc) -> str:
    value = string(d)
    if value and not NAME.match(value):
        d.problem(f"{value!r} is not a valid name (lower-case letters, digits and '-', at most 63)")
    return value


def integer(d: Doc, low: int = 0, high: int = 2**32 - 1) -> int:
    if isinstance(d.value, bool) or not isinstance(d.value, int):
        d.problem(f"must be an integer, not {kind(d.value)}")
        return low
    if not low <= d.value <= high:
        d.problem(f"{d.value} is out of range {low}..{high}")
    return int(d.value)


def port_number(d: Doc) -> int:
    return integer(d, 1, 65535)


def duration(d: Doc) -> float:
    """``250ms``, ``1s``, ``1.5s``, ``2m``, ``1h``, or a number of seconds."""
    if isinstance(d.value, (int, float)) and not isinstance(d.value, bool) and d.value >= 0:
        return float(d.value)
    m = _DURATION.match(d.value) if isinstance(d.value, str) else None
    if m is None:
        d.problem(f"{d.value!r} is not a duration; write e.g. 250ms, 1s, 2m")
        return 0.0
    return float(m.group(1)) * _UNITS[m.group(2)]


def choice(d: Doc, choices: tuple[S, ...]) -> S:
    if d.value not in choices:
        d.problem(f"{d.value!r} is not one of: {', '.join(choices)}")
        return choices[0]
    return choices[choices.index(d.value)]


def host_port(
    d: Doc, *, ip_only: bool, why: str = "EDS endpoints are not resolved by name"
) -> Address | None:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``)."""
    text = string(d)
    host, sep, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not text or not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        if text:
            d.problem(f"{text!r} is not HOST:PORT with a port in 1..65535")
        return None
    if ip_only:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            d.problem(f"{host!r} is not an IP address ({why})")
            return None
    return host, int(port_text)
