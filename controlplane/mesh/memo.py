"""Envoy resources memoised by their inputs, across node groups and across publishes.

Owns `ResourceMemo`: the translator asks it for a resource by a **key** (the hashable values
the resource is built from, cheap to hash: names, ports, small policy objects) and **pins**
(the large model objects it is also built from, such as a version's endpoint tuple, compared
by identity first and by equality only when the object is a new one). An entry whose key and
pins match is returned as the same message object, so a resource that every sidecar group
holds is built once per publish, and one whose inputs did not change since the last publish is
not built at all; the snapshot's encoder then recognises the same object and does not encode
it again either. Each `begin` starts a generation; an entry survives while the current or the
previous translation used it, so memory stays bounded by two meshes' resources.

Built messages are shared: nothing may modify a message after the memo returned it.
Must not depend on: grpc, asyncio, the YAML loader, protobuf (it stores what it is given).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

_Entry = tuple[tuple[object, ...], Any]


class ResourceMemo:
    """Built resources by (key, pins); see the module docstring."""

    def __init__(self) -> None:
        self._current: dict[Hashable, _Entry] = {}
        self._previous: dict[Hashable, _Entry] = {}
        self.built: Counter[Hashable] = Counter()  # by the key's first item, since the last `begin`

    def begin(self) -> None:
        """A new translation: entries the last one did not use are dropped at the next call."""
        self._previous, self._current = self._current, {}
        self.built = Counter()

    def get(
        self,
        key: tuple[Hashable, ...],
        pins: tuple[object, ...],
        build: Callable[P, T],
        *args: P.args,
        **kw: P.kwargs,
    ) -> T:
        """The resource built for ``key`` and ``pins``, building it with ``build(*args)`` when none is."""
        entry = self._current.get(key)
        if entry is None:
            entry = self._previous.get(key)
        if entry is None or entry[0] != pins:  # tuples compare items by identity first
            self.built[key[0]] += 1
            entry = (pins, build(*args, **kw))
        elif entry[0] is not pins:
            entry = (pins, entry[1])  # equal but new objects: pin these (the old ones may go)
        self._current[key] = entry
        value: T = entry[1]
        return value
