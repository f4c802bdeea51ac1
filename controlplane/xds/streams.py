"""The per-stream xDS protocol state machines: state of the world (`SotwStream`) and delta
(`DeltaStream`), sans-I/O. The server feeds each request to `receive` and, whenever a request
arrived or the group's snapshot may have changed, asks `responses(snapshot)` for the serialised
responses to write, in Envoy's make-before-break order.

The rules (Envoy's "xDS REST and gRPC protocol"):

Rule 1 (nonces). Every response carries a new nonce, counting up per stream. A request's
  ``response_nonce`` names the response it answers; one naming anything but the latest response
  of its type is stale. SotW ignores a stale request entirely (its subscription is out of date);
  delta ignores its ACK/NACK but applies its subscription changes, which are increments.
Rule 2 (ACK/NACK). A request answering the latest nonce is a NACK when it carries
  ``error_detail`` (recorded with its message), else an ACK (SotW: of its ``version_info``; delta:
  of the version that response carried). The version is never used to tell them apart: clients
  report it differently. A NACKed response is not resent at the same snapshot version; the next
  version resends that type as the client needs it, changed or not (SotW: the full response;
  delta: the resources of the NACKed response count as never sent). A NACK may be another
  type's fault (a route completes a listener that cannot bind): a resource whose content does
  not change must still reach the client once the fix arrives.
Rule 3 (SotW subscriptions). A request without a nonce (the first of its type) is always
  answered; so is one whose ``resource_names`` changed. For LDS and CDS an empty list, and for
  any type ``"*"``, is a wildcard: the response carries every resource, and a resource is removed
  by its absence. Otherwise a response carries the named resources that exist.
Rule 4 (SotW pushes). When the snapshot changes, a type is pushed only if what this stream would
  be sent for it changed (its names and resource versions): unchanged types stay quiet.
Rule 5 (delta). Each resource has its own version (a hash of its bytes). A response carries only
  the subscribed resources whose version differs from what the client has (its
  ``initial_resource_versions`` on the first request, then what it was sent), and in
  ``removed_resources`` those it has that no longer exist. ``"*"`` subscribes to everything; a
  first LDS/CDS request subscribing to nothing is a wildcard too (legacy). The first request of
  each type is answered even when nothing differs, so the client knows it is up to date.

Must not depend on: asyncio, grpc, the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from controlplane.xds.ledger import Ledger, NodeEntry
from controlplane.xds.snapshot import PUSH_ORDER, Snapshot
from meshproxy.xds.resources import FULL_STATE

WILDCARD = "*"


@dataclass(slots=True)
class _Sotw:
    names: tuple[str, ...]  # sorted, without "*"
    wildcard: bool
    nonce: str = ""
    sent: Any = None  # what the last response carried: a fingerprint, see `SotwStream.responses`
    force: bool = True  # answer on the next flush whatever the fingerprint says
    version: str = ""  # the snapshot version of the last response
    rejected: str | None = None  # the snapshot version whose response was NACKed (Rule 2)


@dataclass(slots=True)
class _Delta:
    names: set[str]
    wildcard: bool
    known: dict[str, str]  # name -> the version the client has
    nonce: str = ""
    version_sent: str = ""
    force: bool = True
    synced: str = ""  # the type's fingerprint when ``known`` was last made equal to it (wildcard)
    rejected: str | None = None  # the snapshot version whose response was NACKed (Rule 2)
    # What the client had, before the last response, of each name that response carried.
    pending: dict[str, str | None] = field(default_factory=dict)


@dataclass
class _Base:
    ledger: Ledger
    entry: NodeEntry
    _counter: int = 0

    def _next_nonce(self) -> str:
        self._counter += 1
        return str(self._counter)

    def _answer(self, type_url: str, nonce: str, request: Any, version: str) -> None:
        """Rule 2: records an ACK or NACK of the latest response (callers drop stale nonces)."""
        if request.HasField("error_detail"):
            self.ledger.nack(self.entry, type_url, version, nonce, request.error_detail.message)
        else:
            self.ledger.ack(self.entry, type_url, version, nonce)


def _order(types: dict[str, Any]) -> list[str]:
    return [t for t in PUSH_ORDER if t in types] + sorted(t for t in types if t not in PUSH_ORDER)


@dataclass
class SotwStream(_Base):
    _types: dict[str, _Sotw] = field(default_factory=dict)

    def receive(self, request: discovery_pb2.DiscoveryRequest) -> None:
        type_url = request.type_url
        state = self._types.get(type_url)
        nonce = request.response_nonce
        if nonce and state is not None:
            if nonce != state.nonce:
                return  # Rule 1: stale
            self._answer(type_url, nonce, request, request.version_info)
            if request.HasField("error_detail"):
                state.rejected, state.sent = state.version, None
            else:
                state.rejected = None
        requested = set(request.resource_names)
        wildcard = WILDCARD in requested or (type_url in FULL_STATE and not requested)
        names = tuple(sorted(requested - {WILDCARD}))
        if state is None:  # a nonce from another stream (a reconnect) answers nothing sent here
            state = self._types[type_url] = _Sotw(names, wildcard)
        elif not nonce or names != state.names or wildcard != state.wildcard:
            state.names, state.wildcard, state.force = names, wildcard, True  # Rule 3
        else:
            return
        self.ledger.subscribed(self.entry, type_url, names, wildcard)

    def responses(self, snapshot: Snapshot) -> list[bytes]:
        out = []
        for type_url in _order(self._types):
            state = self._types[type_url]
            encoded = snapshot.encoded(type_url)
            if state.wildcard:
                fingerprint: Any = encoded.fingerprint
            else:
                fingerprint = tuple(encoded.versions.get(n) for n in state.names)
            if not state.force and (fingerprint == state.sent or snapshot.version == state.rejected):
                continue  # Rule 4 (and Rule 2: not the NACKed version again)
            if state.wildcard:
                body = encoded.all_sotw
            else:
                body = b"".join(encoded.sotw[n] for n in state.names if n in encoded.sotw)
            nonce = self._next_nonce()
            head = discovery_pb2.DiscoveryResponse(
                version_info=snapshot.version, type_url=type_url, nonce=nonce
            ).SerializeToString()
            out.append(head + body)
            state.nonce, state.sent, state.force = nonce, fingerprint, False
            state.version = snapshot.version
            self.ledger.sent(self.entry, type_url, snapshot.version, nonce)
        return out


@dataclass
class DeltaStream(_Base):
    _types: dict[str, _Delta] = field(default_factory=dict)

    def receive(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        type_url = request.type_url
        state = self._types.get(type_url)
        subscribe = set(request.resource_names_subscribe)
        first = state is None
        if state is None:
            legacy_wildcard = type_url in FULL_STATE and not subscribe
            state = self._types[type_url] = _Delta(
                set(), legacy_wildcard, dict(request.initial_resource_versions)
            )
        nonce = request.response_nonce
        if nonce and nonce == state.nonce:  # Rule 1: a stale ACK/NACK is ignored, not its subscriptions
            self._answer(type_url, nonce, request, state.version_sent)
            if request.HasField("error_detail"):  # Rule 2: the client did not take what was sent
                for name, version in state.pending.items():
                    if version is None:
                        state.known.pop(name, None)
                    else:
                        state.known[name] = version
                state.rejected, state.synced = state.version_sent, ""
            else:
                state.rejected = None
            state.pending = {}
        unsubscribe = set(request.resource_names_unsubscribe)
        if not (first or subscribe or unsubscribe):
            return
        state.wildcard = (state.wildcard or WILDCARD in subscribe) and WILDCARD not in unsubscribe
        state.names = (state.names | subscribe) - unsubscribe - {WILDCARD}
        if not state.wildcard:  # a name no longer subscribed is forgotten: resubscribing resends it
            for name in [n for n in state.known if n not in state.names]:
                del state.known[name]
        state.synced, state.rejected = "", None
        self.ledger.subscribed(self.entry, type_url, tuple(sorted(state.names)), state.wildcard)

    def responses(self, snapshot: Snapshot) -> list[bytes]:
        out = []
        for type_url in _order(self._types):
            state = self._types[type_url]
            encoded = snapshot.encoded(type_url)
            versions = encoded.versions
            if not state.force and snapshot.version == state.rejected:
                continue  # Rule 2: not the NACKed version again
            if not state.force and state.wildcard and state.synced == encoded.fingerprint:
                continue  # fast path: nothing of this type changed since this stream was last synced
            candidates = (versions.keys() | state.names) if state.wildcard else state.names
            changed = sorted(n for n in candidates if n in versions and state.known.get(n) != versions[n])
            removed = sorted(
                n for n in state.known if n not in versions and (state.wildcard or n in state.names)
            )
            if state.wildcard:
                state.synced = encoded.fingerprint
            if not (changed or removed or state.force):
                continue
            nonce = self._next_nonce()
            head = discovery_pb2.DeltaDiscoveryResponse(
                system_version_info=snapshot.version,
                type_url=type_url,
                nonce=nonce,
                removed_resources=removed,
            ).SerializeToString()
            out.append(head + b"".join(encoded.delta[n] for n in changed))
            state.pending = {n: state.known.get(n) for n in (*changed, *removed)}
            for name in changed:
                state.known[name] = versions[name]
            for name in removed:
                del state.known[name]
            state.nonce, state.version_sent, state.force = nonce, snapshot.version, False
            self.ledger.sent(self.entry, type_url, snapshot.version, nonce)
        return out
