"""The four xDS resource types the proxy consumes, and how each is decoded and compiled.

Owns the type URLs, the message class behind each, the one-resource compile step (an ``Any``
from a response to a frozen model object, or problems with their field paths) and what each
compiled resource makes the proxy subscribe to next (an EDS cluster's ClusterLoadAssignment, an
RDS listener's RouteConfiguration). This is a decode edge: generated protobuf code is imported
here and in ``state``; nothing on the request path imports this module.
Must not depend on asyncio or sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import DecodeError, Message

from meshproxy.config.compile import compile_cluster, compile_listener
from meshproxy.config.compile_cluster import compile_load_assignment_steps
from meshproxy.config.compile_route import compile_route_configuration_steps
from meshproxy.config.model import (
    Cluster,
    HttpConnectionManager,
    Listener,
    LocalityLbEndpoints,
    RouteConfiguration,
)

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

# Types whose state-of-the-world response is the full set (absence means removal) and whose
# subscription is a wildcard; the other two are named, and follow what LDS/CDS reference.
FULL_STATE = (LISTENER, CLUSTER)
# Envoy's order: clusters before listeners, endpoints before routes, so nothing routes to nothing.
ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
SHORT = {
    LISTENER: "Listener",
    ROUTE: "RouteConfiguration",
    CLUSTER: "Cluster",
    ENDPOINT: "ClusterLoadAssignment",
}


@dataclass(frozen=True, slots=True)
class LoadAssignment:
    """A compiled ClusterLoadAssignment (EDS): what a cluster's endpoints become."""

    localities: tuple[LocalityLbEndpoints, ...]
    overprovisioning_factor: int


Compiled = Listener | Cluster | RouteConfiguration | LoadAssignment


def _endpoints(msg: Message, path: str, problems: list[str]) -> Generator[None, None, LoadAssignment | None]:
    mark = len(problems)
    localities, factor = yield from compile_load_assignment_steps(msg, path, problems)
    return LoadAssignment(localities, factor) if len(problems) == mark else None


@dataclass(frozen=True, slots=True)
class _Kind:
    message: type[Message]
    compile: Callable[[Any, str, list[str]], Any]
    name_field: str
    stepped: bool = False  # ``compile`` is a generator (returns the result, yields between pieces)


KINDS: dict[str, _Kind] = {
    LISTENER: _Kind(listener_pb2.Listener, compile_listener, "name"),
    ROUTE: _Kind(route_pb2.RouteConfiguration, compile_route_configuration_steps, "name", stepped=True),
    CLUSTER: _Kind(cluster_pb2.Cluster, compile_cluster, "name"),
    ENDPOINT: _Kind(endpoint_pb2.ClusterLoadAssignment, _endpoints, "cluster_name", stepped=True),
}


def decode(type_url: str, packed: AnyProto, problems: list[str], where: str) -> tuple[str, Message] | None:
    """(resource name, message) of one ``Any`` of a response of ``type_url``, or None after a problem."""
    kind = KINDS[type_url]
    if packed.type_url != type_url:
        problems.append(f'{where}: a "{packed.type_url}" in a {SHORT[type_url]} response')
        return None
    msg = kind.message()
    try:
        msg.ParseFromString(packed.value)
    except DecodeError as err:
        problems.append(f"{where}: cannot decode the {SHORT[type_url]}: {err}")
        return None
    name = str(getattr(msg, kind.name_field))
    if not name:
        problems.append(f"{where}.{kind.name_field}: is required")
        return None
    return name, msg


def compile_resource(
    type_url: str, name: str, msg: Message, where: str, problems: list[str]
) -> Generator[None, None, Compiled | None]:
    """The compiled resource, or None after appending problems named ``<Type> "name" (where): path: msg``.

    A generator that returns it: a RouteConfiguration compiles one route per step and a
    ClusterLoadAssignment one endpoint per step (a thousand routes or endpoints take tens of
    milliseconds); listeners and clusters compile without a step of their own."""
    found: list[str] = []
    kind = KINDS[type_url]
    try:
        if kind.stepped:
            compiled = yield from kind.compile(msg, "", found)
        else:
            compiled = kind.compile(msg, "", found)
    except DecodeError as err:
        # A typed_config ``Any`` inside the resource is decoded only when compiled (found by the
        # xds fuzzer: bad UTF-8 in a nested DownstreamTlsContext escaped as an exception).
        found.append(f"a typed_config inside does not decode: {err}")
    prefix = f'{SHORT[type_url]} "{name}" ({where})'
    problems.extend(f"{prefix}: {p}" for p in found)
    return None if found else compiled


def rds_names(listener: Listener) -> set[str]:
    chains = listener.filter_chains + (
        (listener.default_filter_chain,) if listener.default_filter_chain else ()
    )
    return {c.filter.rds for c in chains if isinstance(c.filter, HttpConnectionManager) and c.filter.rds}


def eds_name(cluster: Cluster) -> str | None:
    return (cluster.eds_service_name or cluster.name) if cluster.discovery == "EDS" else None
