"""The ledger of connected xDS streams: what each node was sent, what it ACKed, and its NACKs.

Owns one `NodeEntry` per open ADS stream (a node reconnecting opens a new entry), its per-type
`TypeState`, the events a watcher of the management API sees (`add_listener` for a callback,
`subscribe` for an async iterator), and the Prometheus metrics: connected streams, pushes, ACKs
and NACKs by type, and a gauge of nodes whose latest answer on some type is a NACK, so that a
NACK never goes unnoticed. The server calls it; it decides nothing about the protocol.

Must not depend on: grpc, the cache, the server.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

StreamKind = Literal["sotw", "delta"]
EventKind = Literal["connected", "disconnected", "sent", "ack", "nack"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def short_type(type_url: str) -> str:
    """``type.googleapis.com/envoy.config.listener.v3.Listener`` -> ``Listener`` (metric labels)."""
    return type_url.rsplit(".", 1)[-1]


@dataclass(slots=True)
class TypeState:
    """One resource type on one stream (runtime state, updated in place by the ledger)."""

    version_sent: str = ""
    version_acked: str = ""
    nonce: str = ""
    last_nack_message: str = ""
    nack_count: int = 0
    nacking: bool = False  # the latest answer to this type was a NACK
    subscribed: tuple[str, ...] = ()
    wildcard: bool = False


@dataclass(slots=True)
class NodeEntry:
    """One connected stream: who (node, group, client build), since when, and per-type state."""

    stream_id: int
    node_id: str
    cluster: str  # the node group the stream is served from
    user_agent_name: str
    user_agent_version: str
    connected_at: datetime
    kind: StreamKind
    peer: str
    types: dict[str, TypeState] = field(default_factory=dict)

    @property
    def nacking(self) -> bool:
        return any(t.nacking for t in self.types.values())


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    stream_id: int
    node_id: str
    cluster: str
    at: datetime
    type_url: str = ""
    version: str = ""
    nonce: str = ""
    message: str = ""


Listener = Callable[[Event], None]


class Subscription:
    """A ledger watcher's queue. A consumer that falls ``max_queued`` events behind loses the
    oldest ones (logged), rather than growing memory without bound."""

    def __init__(self, ledger: Ledger, max_queued: int) -> None:
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._max = max_queued
        self._remove = ledger.add_listener(self._put)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self._queue.get()

    async def aclose(self) -> None:
        self._remove()

    def _put(self, event: Event) -> None:
        if self._queue.qsize() >= self._max:
            self._queue.get_nowait()
            log.warning("ledger watcher is %d events behind; dropping the oldest", self._max)
        self._queue.put_nowait(event)


def _client_version(node: Any) -> str:
    if node.HasField("user_agent_build_version"):
        v = node.user_agent_build_version.version
        return f"{v.major_number}.{v.minor_number}.{v.patch}"
    return str(node.user_agent_version)


class Ledger:
    """Connected streams and their ACK/NACK state; metrics go into ``registry``."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._entries: dict[int, NodeEntry] = {}
        self._listeners: list[Listener] = []
        self._next_id = 0
        self._nacking_nodes = 0
        r = self.registry
        self._m_streams = Gauge(
            "controlplane_xds_connected_streams", "Open ADS streams", ["kind"], registry=r
        )
        self._m_pushes = Counter("controlplane_xds_pushes", "xDS responses sent", ["type"], registry=r)
        self._m_acks = Counter("controlplane_xds_acks", "xDS responses ACKed", ["type"], registry=r)
        self._m_nacks = Counter("controlplane_xds_nacks", "xDS responses NACKed", ["type"], registry=r)
        self._m_nacking = Gauge(
            "controlplane_xds_nodes_nacking",
            "Streams whose latest answer on some resource type is a NACK",
            registry=r,
        )
        # Label children resolved once per type: a push to 1,000 streams costs no label lookups.
        self._children: dict[str, tuple[Any, Any, Any]] = {}

    # ----------------------------------------------------------------- reading

    def entries(self) -> list[NodeEntry]:
        """A copy of every connected stream's entry, oldest first."""
        return [copy.deepcopy(e) for e in self._entries.values()]

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Calls ``listener(event)`` for every event; returns the function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def subscribe(self, max_queued: int = 10_000) -> Subscription:
        """Every event from the moment of the call, as an async iterator; ``aclose()`` it."""
        return Subscription(self, max_queued)

    # ----------------------------------------------------------------- writing (the server)

    def connect(self, *, node: Any, cluster: str, kind: StreamKind, peer: str) -> NodeEntry:
        self._next_id += 1
        entry = NodeEntry(
            stream_id=self._next_id,
            node_id=node.id,
            cluster=cluster,
            user_agent_name=node.user_agent_name,
            user_agent_version=_client_version(node),
            connected_at=self._clock(),
            kind=kind,
            peer=peer,
        )
        self._entries[entry.stream_id] = entry
        self._m_streams.labels(kind).inc()
        self._emit(entry, "connected")
        return entry

    def disconnect(self, entry: NodeEntry) -> None:
        if self._entries.pop(entry.stream_id, None) is None:
            return
        self._m_streams.labels(entry.kind).dec()
        if entry.nacking:
            self._nacking_nodes -= 1
            self._m_nacking.set(self._nacking_nodes)
        self._emit(entry, "disconnected")

    def subscribed(self, entry: NodeEntry, type_url: str, names: tuple[str, ...], wildcard: bool) -> None:
        state = self._state(entry, type_url)
        state.subscribed = names
        state.wildcard = wildcard

    def sent(self, entry: NodeEntry, type_url: str, version: str, nonce: str) -> None:
        state = self._state(entry, type_url)
        state.version_sent = version
        state.nonce = nonce
        self._metrics(type_url)[0].inc()
        if self._listeners:
            self._emit(entry, "sent", type_url, version, nonce)

    def ack(self, entry: NodeEntry, type_url: str, version: str, nonce: str) -> None:
        state = self._state(entry, type_url)
        state.version_acked = version
        self._set_nacking(entry, state, False)
        self._metrics(type_url)[1].inc()
        if self._listeners:
            self._emit(entry, "ack", type_url, version, nonce)

    def nack(self, entry: NodeEntry, type_url: str, version: str, nonce: str, message: str) -> None:
        state = self._state(entry, type_url)
        state.last_nack_message = message
        state.nack_count += 1
        self._set_nacking(entry, state, True)
        self._metrics(type_url)[2].inc()
        log.warning(
            "node %r (%s, stream %d) NACKed %s nonce %s: %s",
            entry.node_id,
            entry.peer,
            entry.stream_id,
            short_type(type_url),
            nonce,
            message,
        )
        self._emit(entry, "nack", type_url, version, nonce, message)

    # ----------------------------------------------------------------- internals

    def _state(self, entry: NodeEntry, type_url: str) -> TypeState:
        state = entry.types.get(type_url)
        if state is None:
            state = entry.types[type_url] = TypeState()
        return state

    def _set_nacking(self, entry: NodeEntry, state: TypeState, nacking: bool) -> None:
        before = entry.nacking
        state.nacking = nacking
        after = entry.nacking
        if before != after and entry.stream_id in self._entries:
            self._nacking_nodes += 1 if after else -1
            self._m_nacking.set(self._nacking_nodes)

    def _metrics(self, type_url: str) -> tuple[Any, Any, Any]:
        children = self._children.get(type_url)
        if children is None:
            label = short_type(type_url)
            children = self._children[type_url] = (
                self._m_pushes.labels(label),
                self._m_acks.labels(label),
                self._m_nacks.labels(label),
            )
        return children

    def _emit(
        self,
        entry: NodeEntry,
        kind: EventKind,
        type_url: str = "",
        version: str = "",
        nonce: str = "",
        message: str = "",
    ) -> None:
        if not self._listeners:
            return
        at = self._clock()
        event = Event(
            kind, entry.stream_id, entry.node_id, entry.cluster, at, type_url, version, nonce, message
        )
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken watcher must not break the stream that emitted
                log.exception("ledger listener %r failed", listener)
