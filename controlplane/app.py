"""The controlplane's config sources composed into snapshots: mesh config, raw xDS files, the API.

Owns the one serving config (`MeshState`: the mesh document, its model, where it came from, its
version) and every way it changes: `apply` (the management API and file reloads), `shift`
(traffic weights), `reload_files` (hot reload of ``--mesh`` and ``--xds-resources``, woken by
`file_watch`: a file a notification names is read again, or, when polling, a file whose inode,
size or mtime changed; content equal to what is served changes nothing; a bad reload, such as a
file caught half-written, logs its problems, emits a ``rejected`` event and keeps the last good
snapshots, and the write that completes the file wakes the next reload).

Publishing translates the mesh, merges the raw resources into the ``default`` group (a raw
resource wins over a mesh resource of the same name), checks every group's snapshot first and
only then sets them, all with one new version, so a refused config changes no group. Groups that
disappear are removed from the cache (their nodes fall back to ``default``). The translator's
`ResourceMemo` and the snapshots' `Pieces` live as long as the publisher: a publish builds and
encodes only the resources whose inputs changed (an EndpointSlice change: its
ClusterLoadAssignments), and every group shares the resources they have in common.

The last writer wins: a mesh file edited after an API apply or shift replaces what the API set.

Must not depend on: grpc (the servicers and the CLI hold the server), generated protobuf code.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from controlplane.file_watch import watch
from controlplane.mesh import DEFAULT_GROUP, Mesh, default_mesh_text, load_mesh, translate, validate_mesh
from controlplane.mesh.memo import ResourceMemo
from controlplane.xds import Pieces, Resources, Snapshot, SnapshotCache, load_resource_file
from meshproxy.errors import ConfigError

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0  # only when filesystem notifications are not available


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ConfigEvent:
    """A change (or refused change) of the serving config: ``applied``, ``rejected``, ``reloaded``."""

    kind: str
    version: str
    message: str
    at: datetime


@dataclass(frozen=True, slots=True)
class MeshState:
    version: str
    text: str
    doc: dict[str, Any]
    mesh: Mesh
    source: str
    applied_at: datetime
    groups: dict[str, Resources] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an apply or shift did: ``problems`` (empty when valid), the resulting groups."""

    problems: tuple[str, ...]
    version: str
    applied: bool
    groups: dict[str, Resources] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Watched:
    """A source file, and its (inode, size, mtime) when last looked at."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stamp = self.stat()

    def stat(self) -> tuple[int, int, int]:
        try:
            st = self.path.stat()
        except OSError:
            return (0, 0, 0)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def changed(self, *, notified: bool) -> bool:
        """Whether to read the file again: after a notification always (two writes within one
        tick of the filesystem's clock leave the stamp as it was), when polling if it moved."""
        stamp = self.stat()
        moved, self.stamp = stamp != self.stamp, stamp
        return notified or moved


class ControlPlane:
    """The serving config and its sources; publishes into ``cache``."""

    def __init__(
        self,
        cache: SnapshotCache,
        *,
        mesh_path: Path | None = None,
        resources_path: Path | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.cache = cache
        self._clock = clock
        self._mesh_file = _Watched(mesh_path) if mesh_path else None
        self._resources_file = _Watched(resources_path) if resources_path else None
        self._raw: Resources = {}
        self._counter = 0
        # kept from one publish to the next: unchanged resources are neither built nor encoded again
        self._memo = ResourceMemo()
        self._pieces = Pieces()
        self._listeners: list[Callable[[ConfigEvent], None]] = []
        self.state: MeshState | None = None

    @property
    def resources_path(self) -> Path | None:
        return self._resources_file.path if self._resources_file else None

    def start(self, *, mesh: bool = True) -> None:
        """Load both sources and publish the first snapshots; `ConfigError` if either is bad.
        Without ``mesh`` only the raw resources are loaded: another source (Kubernetes) will
        publish the mesh with `apply_model`."""
        if self._resources_file is not None:
            self._raw = load_resource_file(self._resources_file.path)
        if not mesh:
            return
        if self._mesh_file is not None:
            text, source = _read(self._mesh_file.path), f"file:{self._mesh_file.path}"
        else:
            text, source = default_mesh_text(), "default"
        outcome = self.apply(text, source=source)
        if not outcome.ok:
            raise ConfigError(list(outcome.problems))

    # ----------------------------------------------------------------- changes

    def apply(self, text: str, *, dry_run: bool = False, source: str = "api") -> Outcome:
        try:
            mesh, doc = load_mesh(text, source="mesh")
        except ConfigError as exc:
            return self._refused(exc.problems, source, dry_run)
        return self._publish(text, doc, mesh, source, dry_run)

    def apply_model(self, mesh: Mesh, text: str, *, source: str) -> Outcome:
        """Publish a mesh another source built (the Kubernetes source), described by ``text``.
        It has no mesh document, so traffic shifts are refused: its source owns the routes."""
        return self._publish(text, {}, mesh, source, False)

    def shift(self, service: str, weights: dict[str, int], *, dry_run: bool = False) -> Outcome:
        """Sets ``weights`` as the split of every route of ``service`` not pinned with ``to``."""
        if self.state is None:
            return self._refused(["no mesh config is serving yet"], "shift", dry_run)
        if not self.state.doc:
            problem = f"the mesh comes from {self.state.source}: change the routes there (a ServiceRoute)"
            return self._refused([problem], "shift", dry_run)
        doc = copy.deepcopy(self.state.doc)
        entry = next(
            (s for s in doc.get("services", []) if isinstance(s, dict) and s.get("name") == service), None
        )
        if entry is None:
            known = ", ".join(s.name for s in self.state.mesh.services)
            return self._refused(
                [f"service {service!r} is not in the mesh (services: {known})"], "shift", dry_run
            )
        # Weights arrive unordered (a protobuf map): write them in the service's version order.
        service_model = self.state.mesh.service(service)
        rank = {v.name: i for i, v in enumerate(service_model.versions)} if service_model else {}
        weights = dict(sorted(weights.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
        routes = entry.setdefault("routes", [{"match": {"prefix": "/"}}])
        for route in routes:
            if isinstance(route, dict) and "to" not in route:
                route["split"] = dict(weights)
        try:
            mesh = validate_mesh(doc, source=f"shift {service}")
        except ConfigError as exc:
            return self._refused(exc.problems, "shift", dry_run)
        text = yaml.safe_dump(doc, sort_keys=False)
        return self._publish(text, doc, mesh, "shift", dry_run)

    def reload_files(self, paths: Collection[Path], *, notified: bool) -> None:
        """Reload whichever of the source files among ``paths`` changed (see `_Watched.changed`)."""
        resources = self._resources_file
        if resources is not None and resources.path in paths and resources.changed(notified=notified):
            try:
                raw = load_resource_file(resources.path)
            except ConfigError as exc:
                self._reject(str(resources.path), exc.problems)
            else:
                if raw != self._raw:
                    previous, self._raw = self._raw, raw
                    if not self._republish(f"file:{resources.path}").ok:
                        self._raw = previous
        mesh = self._mesh_file
        if mesh is not None and mesh.path in paths and mesh.changed(notified=notified):
            source = f"file:{mesh.path}"
            try:
                text = _read(mesh.path)
            except ConfigError as exc:
                self._reject(str(mesh.path), exc.problems)
                return
            if self.state is None or (self.state.text, self.state.source) != (text, source):
                self.apply(text, source=source)

    async def watch_files(self, poll_interval: float = POLL_INTERVAL) -> None:
        """Reload the source files as they change, until cancelled."""
        paths = [w.path for w in (self._resources_file, self._mesh_file) if w is not None]
        async for wake in watch(paths, poll_interval=poll_interval):
            try:
                self.reload_files(wake.paths, notified=wake.notified)
            except Exception:  # a reload bug must not stop the next reload
                log.exception("reloading the config sources failed")

    # ----------------------------------------------------------------- events

    def add_listener(self, listener: Callable[[ConfigEvent], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, kind: str, version: str, message: str) -> None:
        event = ConfigEvent(kind, version, message, self._clock())
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("config listener %r failed", listener)

    # ----------------------------------------------------------------- publishing

    @property
    def version(self) -> str:
        return self.state.version if self.state else ""

    def _refused(self, problems: list[str], source: str, dry_run: bool) -> Outcome:
        if not dry_run:
            self._reject(source, problems)
        return Outcome(tuple(problems), self.version, False)

    def _reject(self, source: str, problems: list[str]) -> None:
        log.error(
            "config from %s refused; still serving version %s:\n  %s",
            source,
            self.version or "(none)",
            "\n  ".join(problems),
        )
        self._emit("rejected", self.version, f"{source}: " + "; ".join(problems))

    def _groups(self, mesh: Mesh) -> dict[str, Resources]:
        groups = translate(mesh, self._memo)
        default = groups.setdefault(DEFAULT_GROUP, {})
        for type_url, by_name in self._raw.items():
            default.setdefault(type_url, {}).update(by_name)
        return groups

    def _publish(self, text: str, doc: dict[str, Any], mesh: Mesh, source: str, dry_run: bool) -> Outcome:
        groups = self._groups(mesh)
        version = str(self._counter + 1)
        self._pieces.begin()
        snapshots = {name: Snapshot(version, resources, self._pieces) for name, resources in groups.items()}
        problems = [f"group {name!r}: {p}" for name, s in snapshots.items() for p in s.check()]
        if problems:
            return self._refused(problems, source, dry_run)
        if dry_run:
            return Outcome((), self.version, False, groups)
        self._counter += 1
        for name, snapshot in snapshots.items():
            self.cache.set_snapshot(name, snapshot)
        for name in self.cache.groups():
            if name not in snapshots:
                self.cache.remove(name)
        previous = self.state
        self.state = MeshState(version, text, doc, mesh, source, self._clock(), groups)
        log.info("config version %s from %s: %d group(s)", version, source, len(groups))
        self._emit("applied", version, f"from {source}" + (f" (was {previous.version})" if previous else ""))
        return Outcome((), version, True, groups)

    def _republish(self, source: str) -> Outcome:
        state = self.state
        if state is None:
            return Outcome(("no mesh config is serving yet",), "", False)
        outcome = self._publish(state.text, state.doc, state.mesh, state.source, False)
        if outcome.applied and self.state is not None:
            self.state = replace(self.state, source=state.source)
            self._emit("reloaded", outcome.version, f"raw resources from {source}")
        return outcome


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read ({exc})"]) from None
