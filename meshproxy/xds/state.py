"""The ADS client as a sans-I/O state machine: subscriptions, versions, nonces, ACK and NACK.

Owns what Envoy's gRPC mux owns, for state of the world and delta alike:

Rule 1. On every (re)connect, subscribe CDS and LDS as wildcards (clusters first), and the
        named EDS/RDS resources already wanted; delta sends the versions it holds
        (``initial_resource_versions``), state of the world the version it last accepted.
        Nonces belong to a stream and start empty.
Rule 2. A response is staged, then decoded and compiled resource by resource (``Staged.work``,
        so the shell can yield between slices; a RouteConfiguration route by route), checked as
        a whole, assembled (``candidate_steps``, a cluster per step), then either accepted or
        rejected as a whole: a response with one bad resource changes nothing.
Rule 3. ACK: the same type's request carrying the accepted version (state of the world) and the
        response's nonce. NACK: the previously accepted version, the nonce, and an
        ``error_detail`` (INVALID_ARGUMENT) listing every problem with its field path.
Rule 4. A state-of-the-world LDS/CDS response is the full set (a missing name is removed); an
        EDS/RDS response only updates the names it carries. Delta says removals explicitly.
Rule 5. Accepted clusters of type EDS make their ClusterLoadAssignment wanted; accepted
        listeners with RDS their RouteConfiguration. A change of the wanted set is sent at once;
        resources no longer wanted are forgotten. Resources nobody asked for are ignored.
Rule 6. A wanted EDS/RDS name that has not arrived within ``initial_fetch_timeout`` stops
        holding up its cluster or listener (``handle_timer``).

The shell feeds ``receive``-side calls and sends ``requests_to_send()``; time comes in as ``now``.
Must not import asyncio or sockets.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2 as dpb
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from meshproxy.config.compile_common import finish
from meshproxy.config.model import Cluster, Config, DynamicResources, Listener
from meshproxy.xds.assemble import Assembly, BindCache, assemble
from meshproxy.xds.resources import (
    CLUSTER,
    ENDPOINT,
    FULL_STATE,
    LISTENER,
    ORDER,
    ROUTE,
    SHORT,
    Compiled,
    compile_resource,
    decode,
    eds_name,
    rds_names,
)

_ABBREVIATION = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds"}

Request: TypeAlias = "dpb.DiscoveryRequest | dpb.DeltaDiscoveryRequest"
Response: TypeAlias = "dpb.DiscoveryResponse | dpb.DeltaDiscoveryResponse"


@dataclass(slots=True)
class TypeState:
    """What the client holds for one resource type."""

    type_url: str
    wildcard: bool
    names: set[str] = field(default_factory=set)  # named subscription (EDS/RDS)
    resources: dict[str, Compiled] = field(default_factory=dict)
    # Each resource as it arrived (its serialised Any) and when it was accepted (``now``): what
    # the admin's /config_dump shows, in Envoy's ConfigDump form.
    raw: dict[str, tuple[AnyProto, float]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # per-resource (delta)
    version_info: str = ""  # the last accepted response version
    nonce: str = ""  # the last response nonce on this stream
    requested: bool = False  # a request for this type went out on this stream
    accepted_once: bool = False
    nacks: int = 0
    last_nack: str = ""


@dataclass(slots=True)
class Staged:
    """One response on its way to a verdict: ``work`` decodes and compiles it, one resource a step."""

    type_url: str
    nonce: str
    version_info: str
    # (where, declared name (delta) or "", per-resource version, the packed resource)
    packed: list[tuple[str, str, str, AnyProto]]
    removed: list[str]
    subscribed: set[str] | None  # None: wildcard (every name is taken)
    full_state: bool
    known: tuple[str, ...]  # names held before: what a full-state response removes by omission
    problems: list[str] = field(default_factory=list)
    items: list[tuple[str, str]] = field(default_factory=list)  # (name, version) of what compiled
    compiled: dict[str, Compiled] = field(default_factory=dict)
    raw: dict[str, AnyProto] = field(default_factory=dict)

    def work(self) -> Generator[None, None, None]:
        """Decodes and compiles one resource per step, a RouteConfiguration one route per step
        (the shell yields to its loop between slices); a full-state response's removals are
        known once the last step ran."""
        seen: set[str] = set()
        for where, declared, version, any_msg in self.packed:
            got = decode(self.type_url, any_msg, self.problems, where)
            if got is not None:
                yield from self._one(where, declared, version, *got, seen)
                if got[0] in self.compiled:
                    self.raw[got[0]] = any_msg
            yield
        if self.full_state:
            self.removed = [n for n in self.known if n not in seen]

    def _one(
        self, where: str, declared: str, version: str, name: str, msg: Message, seen: set[str]
    ) -> Generator[None, None, None]:
        if declared and declared != name:
            self.problems.append(f'{where}.name: "{declared}" but the resource inside is named "{name}"')
        elif name in seen:
            self.problems.append(f'{where}: {SHORT[self.type_url]} "{name}" appears twice in one response')
        elif self.subscribed is None or name in self.subscribed:  # others: not asked for, ignored
            seen.add(name)
            self.items.append((name, version))
            out = yield from compile_resource(self.type_url, name, msg, where, self.problems)
            if out is not None:
                self.compiled[name] = out


class XdsState:
    def __init__(self, static: Config, dynamic: DynamicResources, *, build: str = "meshproxy") -> None:
        self.static = static
        self.delta = dynamic.delta
        self.fetch_timeout = dynamic.initial_fetch_timeout
        self.node = base_pb2.Node(
            id=static.node.id,
            cluster=static.node.cluster,
            user_agent_name="meshproxy",
            user_agent_version=build,
        )
        self.types: dict[str, TypeState] = {}
        for url in ORDER:
            wildcard = url in FULL_STATE
            if wildcard and not (dynamic.cds if url == CLUSTER else dynamic.lds):
                continue
            self.types[url] = TypeState(url, wildcard)
        self._out: list[Request] = []
        self._node_sent = False
        self.active: tuple[dict[str, Listener], dict[str, Cluster]] = ({}, {})
        self.cache = BindCache()
        self.waiting_since: dict[str, float] = {}  # wanted EDS/RDS name -> when first wanted
        self.expired: set[str] = set()
        self.warming: tuple[str, ...] = ()
        # Static clusters of type EDS want their endpoints from the first stream on.
        self.static_eds = {n for c in static.clusters if (n := eds_name(c)) is not None}
        self.types[ENDPOINT].names = set(self.static_eds)
        # Whether a first complete config was assembled; true from the start when there is
        # nothing to wait for (ADS configured without LDS, CDS or static EDS clusters).
        self.complete = not self.static_eds and not any(ts.wildcard for ts in self.types.values())
        self.version = ""

    # ------------------------------------------------------------------ stream lifecycle

    def connected(self, now: float) -> None:
        """A new stream: nonces reset, every subscription is sent again (Rule 1)."""
        self._out.clear()
        self._node_sent = False
        if not self.complete:
            for name in self.static_eds - set(self.types[ENDPOINT].resources):
                self.waiting_since.setdefault(name, now)
        for ts in self.types.values():
            ts.nonce = ""
            ts.requested = False
            if ts.wildcard or ts.names:
                self._subscribe(ts)

    def requests_to_send(self) -> list[Request]:
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------------ responses

    def stage(self, response: Response) -> Staged | None:
        """Takes a response in; None for a type this client never asked for (ignored)."""
        ts = self.types.get(response.type_url)
        if ts is None:
            return None
        ts.nonce = response.nonce
        if isinstance(response, dpb.DeltaDiscoveryResponse):
            version = response.system_version_info
            removed = list(response.removed_resources)
            packed = [
                (f"resources[{i}]", r.name, r.version, r.resource) for i, r in enumerate(response.resources)
            ]
        else:
            version = response.version_info
            removed = []
            packed = [(f"resources[{i}]", "", version, r) for i, r in enumerate(response.resources)]
        full = ts.wildcard and not self.delta
        subscribed = None if ts.wildcard else set(ts.names)
        return Staged(
            ts.type_url, response.nonce, version, packed, removed, subscribed, full, tuple(ts.resources)
        )

    def check(self, staged: Staged) -> None:
        """Cross-resource rules, after every resource compiled."""
        static = self.static
        if staged.type_url == CLUSTER:
            clash = {c.name for c in static.clusters} & set(staged.compiled)
            staged.problems.extend(f'Cluster "{n}": a static cluster has this name' for n in sorted(clash))
        if staged.type_url == LISTENER:
            listeners = dict(self.types[LISTENER].resources)
            for name in staged.removed:
                listeners.pop(name, None)
            listeners.update(staged.compiled)
            clash = {ln.name for ln in static.listeners} & set(staged.compiled)
            staged.problems.extend(f'Listener "{n}": a static listener has this name' for n in sorted(clash))
            owner: dict[tuple[str, int], str] = {}
            # A TypeState holds only what its type URL compiles to: the isinstance narrows, not filters.
            dynamic = [ln for ln in listeners.values() if isinstance(ln, Listener)]
            for ln in (*static.listeners, *dynamic):
                key = (ln.address.host, ln.address.port)
                if ln.address.port and owner.setdefault(key, ln.name) != ln.name:
                    staged.problems.append(
                        f'Listener "{ln.name}": address {key[0]}:{key[1]} '
                        f'is also the address of "{owner[key]}"'
                    )

    def candidate(self, staged: Staged) -> Assembly:
        """The Config the proxy would run if ``staged`` were accepted (nothing committed yet)."""
        return finish(self.candidate_steps(staged))

    def candidate_steps(self, staged: Staged) -> Generator[None, None, Assembly]:
        """``candidate`` one cluster or listener per step (the shell yields between slices)."""
        maps = {url: dict(ts.resources) for url, ts in self.types.items()}
        target = maps[staged.type_url]
        for name in staged.removed:
            target.pop(name, None)
        target.update(staged.compiled)
        return (yield from self._assemble(maps, self.version_label(staged)))

    def accept(self, staged: Staged, assembly: Assembly, now: float) -> None:
        """Commit: resources, versions, the ACK, and what the update makes wanted (Rules 3-5)."""
        ts = self.types[staged.type_url]
        for name in staged.removed:
            ts.resources.pop(name, None)
            ts.raw.pop(name, None)
            ts.versions.pop(name, None)
        ts.resources.update(staged.compiled)
        for name, any_msg in staged.raw.items():
            ts.raw[name] = (any_msg, now)
        for name, version in staged.items:
            ts.versions[name] = version
            if not ts.wildcard:
                self.waiting_since.pop(name, None)
        ts.version_info = staged.version_info
        ts.accepted_once = True
        self._ack(ts, None)
        if staged.type_url == CLUSTER and ENDPOINT in self.types:
            clusters = [c for c in ts.resources.values() if isinstance(c, Cluster)]  # narrows, as above
            wanted = self.static_eds | {n for c in clusters if (n := eds_name(c)) is not None}
            self._want(self.types[ENDPOINT], wanted, now)
        elif staged.type_url == LISTENER and ROUTE in self.types:
            listeners = [ln for ln in ts.resources.values() if isinstance(ln, Listener)]
            self._want(self.types[ROUTE], {n for ln in listeners for n in rds_names(ln)}, now)
        self._commit(assembly)

    def reject(self, staged: Staged, problems: list[str]) -> None:
        """NACK: nothing changes; the last good version keeps serving (Rule 3)."""
        ts = self.types[staged.type_url]
        ts.nacks += 1
        ts.last_nack = nack_message(staged, problems)
        self._ack(ts, ts.last_nack)

    # ------------------------------------------------------------------ timers (Rule 6)

    def next_timer(self) -> float | None:
        if self.fetch_timeout <= 0 or not self.waiting_since:
            return None
        return min(self.waiting_since.values()) + self.fetch_timeout

    def handle_timer(self, now: float) -> Assembly | None:
        """Expires overdue initial fetches; the new Assembly when that changed anything."""
        timer = self.next_timer()
        if timer is None or now < timer:
            return None
        for name, since in list(self.waiting_since.items()):
            if now >= since + self.fetch_timeout:
                del self.waiting_since[name]
                self.expired.add(name)
        # Rare (a control plane that never sent a resource), so assembled in one go.
        assembly = finish(self._assemble({url: ts.resources for url, ts in self.types.items()}, self.version))
        self._commit(assembly)
        return assembly

    # ------------------------------------------------------------------ internals

    def version_label(self, staged: Staged | None = None) -> str:
        """``Config.version``: the accepted version of each type, e.g. "cds:3 eds:7 lds:3 rds:2"."""
        parts = []
        for url, ts in self.types.items():
            version = (
                staged.version_info if staged is not None and staged.type_url == url else ts.version_info
            )
            if version:
                parts.append(f"{_ABBREVIATION[url]}:{version}")
        return " ".join(parts) or "static"

    def _assemble(self, maps: dict[str, dict[str, Any]], version: str) -> Generator[None, None, Assembly]:
        return assemble(
            self.static,
            maps.get(LISTENER, {}),
            maps.get(CLUSTER, {}),
            maps.get(ROUTE, {}),
            maps.get(ENDPOINT, {}),
            self.active,
            self.expired,
            self.cache,
            version,
        )

    def _commit(self, assembly: Assembly) -> None:
        self.active = (assembly.listeners, assembly.clusters)
        self.warming = assembly.warming
        self.version = assembly.config.version
        wildcards_done = all(ts.accepted_once for ts in self.types.values() if ts.wildcard)
        if wildcards_done and not assembly.warming:
            self.complete = True

    def _want(self, ts: TypeState, wanted: set[str], now: float) -> None:
        if wanted == ts.names:
            return
        added, gone = wanted - ts.names, ts.names - wanted
        ts.names = wanted
        for name in gone:
            ts.resources.pop(name, None)
            ts.versions.pop(name, None)
            self.waiting_since.pop(name, None)
            self.expired.discard(name)
        for name in added:
            if name not in ts.resources:
                self.waiting_since.setdefault(name, now)
        if self.delta:
            self._out.append(
                self._delta(ts, subscribe=sorted(added), unsubscribe=sorted(gone))
                if ts.requested
                else self._delta(ts, subscribe=sorted(wanted))
            )
            ts.requested = True
        elif ts.requested or wanted:  # a first request that is empty would mean "wildcard"
            self._out.append(self._sotw(ts))

    def _subscribe(self, ts: TypeState) -> None:
        if self.delta:
            names = [] if ts.wildcard else sorted(ts.names)
            self._out.append(self._delta(ts, subscribe=names, initial_versions=dict(ts.versions)))
            ts.requested = True
        else:
            self._out.append(self._sotw(ts))

    def _ack(self, ts: TypeState, error: str | None) -> None:
        detail = (
            status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=error) if error is not None else None
        )
        if self.delta:
            req = self._delta(ts)
            req.response_nonce = ts.nonce
        else:
            req = self._sotw(ts)
        if detail is not None:
            req.error_detail.CopyFrom(detail)
        self._out.append(req)

    def _node(self) -> base_pb2.Node | None:
        if self._node_sent:
            return None
        self._node_sent = True
        return self.node

    def _sotw(self, ts: TypeState) -> dpb.DiscoveryRequest:
        ts.requested = True
        return dpb.DiscoveryRequest(
            version_info=ts.version_info,
            node=self._node(),
            resource_names=[] if ts.wildcard else sorted(ts.names),
            type_url=ts.type_url,
            response_nonce=ts.nonce,
        )

    def _delta(
        self,
        ts: TypeState,
        *,
        subscribe: list[str] | None = None,
        unsubscribe: list[str] | None = None,
        initial_versions: dict[str, str] | None = None,
    ) -> dpb.DeltaDiscoveryRequest:
        return dpb.DeltaDiscoveryRequest(
            node=self._node(),
            type_url=ts.type_url,
            resource_names_subscribe=subscribe or [],
            resource_names_unsubscribe=unsubscribe or [],
            initial_resource_versions=initial_versions or {},
        )


def nack_message(staged: Staged, problems: list[str]) -> str:
    what = SHORT[staged.type_url]
    head = f"rejected {what} update (version {staged.version_info or '-'}, nonce {staged.nonce})"
    return "\n".join([f"{head}: {len(problems)} problem(s)", *problems])
