"""List then watch one kind of Kubernetes object into a local store (client-go's reflector).

Owns the protocol's rules, numbered as the code applies them:

1. **List** the collection (all namespaces), in pages of `PAGE_SIZE` (``limit``/``continue``);
   the store becomes exactly the listed items, and the list's ``metadata.resourceVersion`` is
   where the watch starts. A 410 on a page (the ``continue`` token expired) lists again.
2. **Watch** from that resourceVersion with ``allowWatchBookmarks=true`` and a
   ``timeoutSeconds`` drawn from [`WATCH_TIMEOUT`, twice `WATCH_TIMEOUT`) (spread, so reflectors
   do not all reconnect at once). ``ADDED``/``MODIFIED`` put the object, ``DELETED`` removes it,
   each moving the resourceVersion to the object's; a ``BOOKMARK`` only moves the
   resourceVersion (nothing changed, nobody is told). When the server ends the stream the
   watch resumes from the last resourceVersion: nothing is listed again.
3. **410 Gone** (an ``ERROR`` event with a ``Status`` of code 410, or a 410 answer): the
   resourceVersion is older than the server remembers, so events were lost; list again (rule 1)
   at once. Any other ``ERROR`` event, error answer or broken connection waits a back-off
   (`Backoff`: exponential, full jitter, capped) and then watches again from the last
   resourceVersion (or lists, if no list has succeeded yet).
4. **404** on the list: the kind is not served (a CRD not installed). The store is empty and
   counts as synced, so discovery goes on without it; listing is retried after back-off.

The store holds each object through the resource's ``project`` function (dropping the fields
nobody reads: ``managedFields``, most of a Pod), so memory follows what discovery uses.
`ObjectStore` and `Backoff` are sans-I/O (the store applies events, the back-off takes ``rng``);
`Reflector` is the asyncio shell that runs them against an `Api`, and calls ``on_change`` after a
list and after every event that changed the store.

Must not depend on: the mesh model, the translation, the controlplane's state.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from controlplane.k8s.api import Api, status_error
from controlplane.k8s.errors import ApiError
from controlplane.k8s.objects import JsonObject, Key, keep_whole, key_of, resource_version

log = logging.getLogger(__name__)

PAGE_SIZE = 500
WATCH_TIMEOUT = 300.0  # client-go's minimum watch timeout (5 min)


@dataclass(frozen=True, slots=True)
class Resource:
    """A watched kind: its collection path (all namespaces) and what of each object is kept."""

    kind: str
    path: str
    project: Callable[[JsonObject], JsonObject] = keep_whole


class Expired(Exception):
    """Rule 3: the watch's resourceVersion is gone; list again."""


@dataclass(slots=True)
class ObjectStore:
    """The objects of one kind by key, and the resourceVersion they are current at."""

    resource: Resource
    objects: dict[Key, JsonObject] = field(default_factory=dict)
    resource_version: str = ""

    def replace(self, items: list[JsonObject], version: str) -> None:
        """Rule 1: exactly the listed items, current at ``version``."""
        project = self.resource.project
        self.objects = {key_of(item): project(item) for item in items if isinstance(item, dict)}
        self.resource_version = version

    def apply(self, event: Mapping[str, Any]) -> bool:
        """Rule 2 or 3 for one watch event; whether the objects changed. `Expired` on 410,
        `ApiError` on another ERROR event or an event that is not one."""
        kind, obj = event.get("type"), event.get("object")
        if not isinstance(obj, dict):
            raise ApiError(self.resource.path, 0, "BadEvent", f"a {kind} event without an object")
        if kind == "ERROR":
            error = status_error(self.resource.path, obj)
            if error.gone:
                raise Expired(str(error))
            raise error
        version = resource_version(obj)
        if kind == "BOOKMARK":
            self.resource_version = version or self.resource_version
            return False
        if kind in ("ADDED", "MODIFIED"):
            self.objects[key_of(obj)] = self.resource.project(obj)
        elif kind == "DELETED":
            self.objects.pop(key_of(obj), None)
        else:
            raise ApiError(self.resource.path, 0, "BadEvent", f"unknown watch event type {kind!r}")
        self.resource_version = version or self.resource_version
        return True


@dataclass(slots=True)
class Backoff:
    """Exponential back-off with full jitter (AWS's "full jitter": uniform in [0, min(cap,
    base·2ⁿ)]), so reconnecting clients spread out; `reset` after a success."""

    base: float = 0.5
    cap: float = 30.0
    failures: int = 0

    def next_delay(self, rng: random.Random) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.failures, 32))
        self.failures += 1
        return rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.failures = 0


class Reflector:
    """Keeps ``store`` current with the API server, until cancelled (rules in the module docstring)."""

    def __init__(
        self,
        api: Api,
        resource: Resource,
        on_change: Callable[[Resource], None],
        *,
        rng: random.Random,
        backoff: Backoff | None = None,
        watch_timeout: float = WATCH_TIMEOUT,
    ) -> None:
        self.api = api
        self.store = ObjectStore(resource)
        self.synced = asyncio.Event()  # set after the first list (or the first 404)
        self.lists = 0  # how many times rule 1 ran (the tests and the logs read it)
        self._on_change = on_change
        self._rng = rng
        self._backoff = backoff or Backoff()
        self._watch_timeout = watch_timeout
        self._listed = False

    @property
    def resource(self) -> Resource:
        return self.store.resource

    async def run(self) -> None:
        while True:
            try:
                if not self._listed:
                    await self._list()
                await self._watch()
                self._backoff.reset()
            except Expired as exc:
                log.info("%s: %s; listing again", self.resource.kind, exc)
                self._listed = False
            except ApiError as exc:
                listing = not self._listed
                if exc.gone and not listing:  # the watch's resourceVersion: rule 3
                    self._listed = False
                    continue
                not_served = exc.code == 404 and listing
                if not_served:
                    self._not_served(exc)
                # a list that fails, even with 410, waits (no tight loop)
                await self._wait(exc, logging.DEBUG if not_served else logging.WARNING)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                await self._wait(exc, logging.WARNING)

    async def _list(self) -> None:
        items: list[JsonObject] = []
        params = {"limit": str(PAGE_SIZE)}
        while True:
            page = await self.api.get(self.resource.path, params)
            batch = page.get("items") or []
            items.extend(batch if isinstance(batch, list) else [])
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                break
            params = {"limit": str(PAGE_SIZE), "continue": str(metadata["continue"])}
        self.store.replace(items, str(metadata.get("resourceVersion") or ""))
        self._listed = True
        self.lists += 1
        log.debug(
            "%s: listed %d at resourceVersion %s", self.resource.kind, len(items), self.store.resource_version
        )
        self._changed()

    async def _watch(self) -> None:
        timeout = self._rng.uniform(self._watch_timeout, 2 * self._watch_timeout)
        params = {
            "resourceVersion": self.store.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(int(timeout)),
        }
        async for event in self.api.watch(self.resource.path, params, timeout):
            if self.store.apply(event):
                self._changed()

    def _changed(self) -> None:
        self.synced.set()
        self._on_change(self.resource)

    def _not_served(self, exc: ApiError) -> None:
        if not self.synced.is_set():
            log.warning(
                "%s is not served by the API server (%s); going on without it", self.resource.kind, exc
            )
            self.store.replace([], "")
            self.synced.set()

    async def _wait(self, exc: Exception, level: int) -> None:
        delay = self._backoff.next_delay(self._rng)
        log.log(level, "%s: %s; retrying in %.2fs", self.resource.kind, exc or type(exc).__name__, delay)
        await asyncio.sleep(delay)
