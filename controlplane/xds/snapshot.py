"""An immutable, versioned set of xDS resources for one node group, and its consistency check.

Owns the `Snapshot` (go-control-plane's shape: one version, resources by type URL and name), the
types it serves (the proxy's four type URLs, plus Secret), each resource's version (a hash of its
deterministic serialisation, what delta xDS compares) and the pre-serialised wire pieces the server
concatenates into responses: a resource is serialised once per snapshot, never once per stream.

Protobuf allows concatenating serialised messages: ``DiscoveryResponse(resources=[a])`` bytes
followed by ``DiscoveryResponse(resources=[b])`` bytes parse as one response holding both. The
server relies on that to build a response from a small header and these pieces.

A `Pieces` kept from one snapshot to the next (the publisher's) encodes a message object once:
a snapshot holding the same object as an earlier one (every group holds a callee's shared
cluster; an unchanged resource keeps its object from one publish to the next, see
``controlplane/mesh/memo.py``) reuses its version, wire pieces and the names it refers to. The
objects must not change once given to a snapshot.

Must not depend on: asyncio, grpc, the cache or the server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import InitVar, dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from meshproxy.config.compile_common import type_url as type_url_of
from meshproxy.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

# The four types the proxy consumes are the proxy's (one definition of the vocabulary, and of
# which types are state-of-the-world full sets); Secrets only the controlplane serves.
SECRET = type_url_of(secret_pb2.Secret)

# Envoy's make-before-break order (xDS protocol, "Eventual consistency considerations"): clusters
# before their endpoints, both before the listeners that use them, listeners before their routes.
# Secrets follow go-control-plane's order; Envoy warms a listener or cluster until its secret comes.
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
MESSAGES: dict[str, type[Message]] = {
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    SECRET: secret_pb2.Secret,
}
_HCM = http_connection_manager_pb2.HttpConnectionManager
_TCP = tcp_proxy_pb2.TcpProxy

Resources = dict[str, dict[str, Any]]


def resource_name(message: Message) -> str:
    """The name xDS knows a resource by: ``cluster_name`` for a ClusterLoadAssignment."""
    if isinstance(message, endpoint_pb2.ClusterLoadAssignment):
        return message.cluster_name
    return str(getattr(message, "name", ""))


# (type URL, name) a resource refers to, and the problem to report when it is missing
Need = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Piece:
    """One resource serialised: its version, its SotW and delta pieces, what it refers to."""

    type_url: str
    name: str
    version: str
    sotw: bytes  # DiscoveryResponse(resources=[Any]) bytes
    delta: bytes  # DeltaDiscoveryResponse(resources=[Resource]) bytes
    needs: tuple[Need, ...]


class Pieces:
    """Encoded resources by message object, kept while the current or previous snapshots
    (since the last `begin`) hold them; see the module docstring."""

    def __init__(self) -> None:
        self._current: dict[int, tuple[Message, Piece]] = {}
        self._previous: dict[int, tuple[Message, Piece]] = {}
        self.encoded = 0  # messages serialised since the last `begin`

    def begin(self) -> None:
        """A new set of snapshots: pieces the last set did not use are dropped at the next call."""
        self._previous, self._current = self._current, {}
        self.encoded = 0

    def known(self, type_url: str, name: str, message: Any) -> Piece | None:
        """The piece of ``message`` (already checked) when it was encoded as this type and name."""
        key = id(message)
        entry = self._current.get(key) or self._previous.get(key)
        if entry is None or entry[0] is not message or (entry[1].type_url, entry[1].name) != (type_url, name):
            return None
        self._current[key] = entry
        return entry[1]

    def piece(self, type_url: str, name: str, message: Message) -> Piece:
        """Encodes ``message`` (checked by the caller) and keeps its piece."""
        self.encoded += 1
        piece = _piece(type_url, name, message)
        self._current[id(message)] = (message, piece)
        return piece


@dataclass(frozen=True, slots=True)
class Encoded:
    """One type's resources, serialised once: versions, SotW pieces and delta pieces by name."""

    versions: dict[str, str]
    sotw: dict[str, bytes]  # DiscoveryResponse(resources=[Any]) bytes
    delta: dict[str, bytes]  # DeltaDiscoveryResponse(resources=[Resource]) bytes
    all_sotw: bytes  # every piece of ``sotw``, in name order
    fingerprint: str  # changes whenever any name or version of this type changes
    needs: dict[str, tuple[Need, ...]]  # what each resource refers to


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every resource one node group is served, at one version. Build a new one to change it."""

    version: str
    resources: Resources
    pieces: InitVar[Pieces | None] = None  # the publisher's, to reuse unchanged resources' encoding
    _encoded: dict[str, Encoded] = field(init=False, repr=False, compare=False)
    _problems: list[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self, pieces: Pieces | None) -> None:
        problems: list[str] = []
        encoded: dict[str, Encoded] = {}
        pieces = pieces or Pieces()
        for type_url, by_name in self.resources.items():
            if not isinstance(by_name, dict):
                problems.append(f"resources[{type_url!r}]: must map names to resources")
                continue
            encoded[type_url] = _encode(type_url, by_name, problems, pieces)
        object.__setattr__(self, "_encoded", encoded)
        object.__setattr__(self, "_problems", problems)

    def check(self) -> list[str]:
        """Every consistency problem: wrong types or names, and references to missing resources
        (a listener's RDS route configuration, a route's cluster, an EDS cluster's endpoints)."""
        problems = list(self._problems)
        for type_url in (LISTENER, ROUTE, CLUSTER):
            needs = self.encoded(type_url).needs
            for name in self.resources.get(type_url, {}):
                for kind, needed, problem in needs.get(name, ()):
                    if needed not in self.resources.get(kind, {}):
                        problems.append(problem)
        return problems

    def encoded(self, type_url: str) -> Encoded:
        return self._encoded.get(type_url) or _EMPTY

    def names(self, type_url: str) -> Iterable[str]:
        return self.encoded(type_url).versions.keys()

    def resource_version(self, type_url: str, name: str) -> str | None:
        """The resource's own version (a hash of its bytes), or None when it does not exist."""
        return self.encoded(type_url).versions.get(name)


_EMPTY = Encoded({}, {}, {}, b"", "", {})


def _encode(type_url: str, by_name: dict[str, Any], problems: list[str], pieces: Pieces) -> Encoded:
    versions: dict[str, str] = {}
    sotw: dict[str, bytes] = {}
    delta: dict[str, bytes] = {}
    needs: dict[str, tuple[Need, ...]] = {}
    for name in sorted(by_name, key=str):
        message = by_name[name]
        piece = pieces.known(type_url, name, message) or _checked(type_url, name, message, problems, pieces)
        if piece is not None:
            versions[name], sotw[name], delta[name] = piece.version, piece.sotw, piece.delta
            needs[name] = piece.needs
    digest = hashlib.sha256()
    for name, version in versions.items():
        digest.update(f"{name}\0{version}\0".encode())
    return Encoded(versions, sotw, delta, b"".join(sotw.values()), digest.hexdigest()[:16], needs)


def _checked(type_url: str, name: str, message: Any, problems: list[str], pieces: Pieces) -> Piece | None:
    """The new piece of ``message``, or None when it is not a ``type_url`` resource named ``name``."""
    where = f"resources[{type_url!r}][{name!r}]"
    if not isinstance(message, Message):
        problems.append(f"{where}: not a protobuf message ({type(message).__name__})")
    elif type_url_of(type(message)) != type_url:
        problems.append(f"{where}: a {message.DESCRIPTOR.full_name} is not a {type_url}")
    elif type_url in MESSAGES and resource_name(message) != name:
        problems.append(f"{where}: the resource is named {resource_name(message)!r}")
    else:
        return pieces.piece(type_url, name, message)
    return None


def _piece(type_url: str, name: str, message: Message) -> Piece:
    value = message.SerializeToString(deterministic=True)
    version = hashlib.sha256(value).hexdigest()[:16]
    packed = any_pb2.Any(type_url=type_url, value=value)
    return Piece(
        type_url,
        name,
        version,
        discovery_pb2.DiscoveryResponse(resources=[packed]).SerializeToString(),
        discovery_pb2.DeltaDiscoveryResponse(
            resources=[discovery_pb2.Resource(name=name, version=version, resource=packed)]
        ).SerializeToString(),
        tuple(_needs(name, message)),
    )


def _needs(name: str, message: Message) -> Iterator[Need]:
    """What a listener, route configuration or cluster refers to: route configurations over RDS,
    clusters, an EDS cluster's endpoints."""
    if isinstance(message, listener_pb2.Listener):
        for where, hcm in _connection_managers(message):
            if hcm.HasField("rds"):
                route = hcm.rds.route_config_name
                yield (
                    ROUTE,
                    route,
                    f"listener {name!r}: {where}: rds route_config_name {route!r} has no RouteConfiguration",
                )
            if hcm.HasField("route_config"):
                yield from _route_needs(f"listener {name!r}: {where}.route_config", hcm.route_config)
        for where, tcp in _tcp_proxies(message):
            for cluster in [tcp.cluster] + [c.name for c in tcp.weighted_clusters.clusters]:
                if cluster:
                    yield CLUSTER, cluster, f"listener {name!r}: {where}: cluster {cluster!r} has no Cluster"
    elif isinstance(message, route_pb2.RouteConfiguration):
        yield from _route_needs(f"route configuration {name!r}", message)
    elif isinstance(message, cluster_pb2.Cluster) and message.type == cluster_pb2.Cluster.EDS:
        service = message.eds_cluster_config.service_name or name
        yield ENDPOINT, service, f"cluster {name!r}: EDS service {service!r} has no ClusterLoadAssignment"


def _connection_managers(listener: Any) -> Iterator[tuple[str, Any]]:
    if listener.HasField("api_listener"):
        hcm = _unpack(listener.api_listener.api_listener, _HCM)
        if hcm is not None:
            yield "api_listener", hcm
    for where, typed in _network_filters(listener):
        hcm = _unpack(typed, _HCM)
        if hcm is not None:
            yield where, hcm


def _tcp_proxies(listener: Any) -> Iterator[tuple[str, Any]]:
    for where, typed in _network_filters(listener):
        tcp = _unpack(typed, _TCP)
        if tcp is not None:
            yield where, tcp


def _network_filters(listener: Any) -> Iterator[tuple[str, Any]]:
    chains = [(f"filter_chains[{i}]", c) for i, c in enumerate(listener.filter_chains)]
    if listener.HasField("default_filter_chain"):
        chains.append(("default_filter_chain", listener.default_filter_chain))
    for where, chain in chains:
        for j, network_filter in enumerate(chain.filters):
            yield f"{where}.filters[{j}]", network_filter.typed_config


def _unpack(typed: any_pb2.Any, cls: type[Message]) -> Any:
    if not typed.Is(cls.DESCRIPTOR):
        return None
    message = cls()
    return message if typed.Unpack(message) else None


def _route_needs(where: str, route_config: Any) -> Iterator[Need]:
    for vhost in route_config.virtual_hosts:
        for i, route in enumerate(vhost.routes):
            if not route.HasField("route"):
                continue
            action = route.route
            for cluster in [action.cluster] + [c.name for c in action.weighted_clusters.clusters]:
                if cluster:
                    at = f"{where}: virtual host {vhost.name!r} routes[{i}]"
                    yield CLUSTER, cluster, f"{at}: cluster {cluster!r} has no Cluster"
