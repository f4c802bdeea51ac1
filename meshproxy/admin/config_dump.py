"""The admin's ``/config_dump`` in Envoy's form: an ``envoy.admin.v3.ConfigDump`` as JSON.

Owns what tools that read Envoy's admin (``istioctl proxy-config``-style scripts, ``jq`` recipes,
people who know Envoy) find there: the bootstrap (``BootstrapConfigDump``), then clusters,
listeners, route configurations and secrets, each static (from the bootstrap) and dynamic (the
resources the xDS client accepted, with their version and when), and endpoints with
``?include_eds``, as Envoy orders them. ``?resource=`` keeps one repeated field of them
(``dynamic_active_clusters``), ``?name_regex=`` the entries whose name it matches, as Envoy's
query parameters do. Secrets and every other field Envoy's protos mark ``sensitive`` (private
keys) are shown as ``[redacted]``, as Envoy shows them. meshproxy's own view (the compiled
configuration and the xDS client's state) stays at ``/config_dump?format=compiled``.

Must not be imported on the request path (it builds protobuf messages per call).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from envoy.admin.v3 import config_dump_pb2, config_dump_shared_pb2
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2, json_format, symbol_database
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from udpa.annotations import sensitive_pb2

from meshproxy.config.regex import compile_regex
from meshproxy.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

if TYPE_CHECKING:
    from meshproxy.config.model import Config
    from meshproxy.xds.client import AdsClient

REDACTED = "[redacted]"
_HCM_URL = "type.googleapis.com/" + hcm.HttpConnectionManager.DESCRIPTOR.full_name
_shared = config_dump_shared_pb2


def config_dump(config: Config, xds: AdsClient | None, query: str, started: float) -> dict[str, Any]:
    """The ConfigDump of ``config`` (and of what ``xds`` accepted) as Envoy's JSON; ``started``
    is the wall-clock time the static configuration was loaded."""
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    boot = config.bootstrap if config.bootstrap is not None else bootstrap_pb2.Bootstrap()
    loaded = _timestamp(started)
    dynamic = _Dynamic(xds)
    configs: list[Message] = [
        config_dump_pb2.BootstrapConfigDump(bootstrap=boot, last_updated=loaded),
        _shared.ClustersConfigDump(
            version_info=dynamic.version(CLUSTER),
            static_clusters=[
                _shared.ClustersConfigDump.StaticCluster(cluster=_pack(c), last_updated=loaded)
                for c in boot.static_resources.clusters
            ],
            dynamic_active_clusters=[
                _shared.ClustersConfigDump.DynamicCluster(version_info=v, cluster=r, last_updated=t)
                for v, r, t in dynamic.resources(CLUSTER)
            ],
        ),
        _shared.ListenersConfigDump(
            version_info=dynamic.version(LISTENER),
            static_listeners=[
                _shared.ListenersConfigDump.StaticListener(listener=_pack(ln), last_updated=loaded)
                for ln in boot.static_resources.listeners
            ],
            dynamic_listeners=[
                _shared.ListenersConfigDump.DynamicListener(
                    name=_name(r, listener_pb2.Listener),
                    active_state=_shared.ListenersConfigDump.DynamicListenerState(
                        version_info=v, listener=r, last_updated=t
                    ),
                )
                for v, r, t in dynamic.resources(LISTENER)
            ],
        ),
        _shared.RoutesConfigDump(
            static_route_configs=[
                _shared.RoutesConfigDump.StaticRouteConfig(route_config=_pack(rc), last_updated=loaded)
                for rc in _inline_routes(boot, dynamic.messages(LISTENER, listener_pb2.Listener))
            ],
            dynamic_route_configs=[
                _shared.RoutesConfigDump.DynamicRouteConfig(version_info=v, route_config=r, last_updated=t)
                for v, r, t in dynamic.resources(ROUTE)
            ],
        ),
        config_dump_pb2.SecretsConfigDump(
            static_secrets=[
                config_dump_pb2.SecretsConfigDump.StaticSecret(
                    name=s.name, secret=_pack(s), last_updated=loaded
                )
                for s in boot.static_resources.secrets
            ]
        ),
    ]
    if "include_eds" in params:
        configs.append(
            _shared.EndpointsConfigDump(
                static_endpoint_configs=[
                    _shared.EndpointsConfigDump.StaticEndpointConfig(
                        endpoint_config=_pack(c.load_assignment), last_updated=loaded
                    )
                    for c in boot.static_resources.clusters
                    if c.HasField("load_assignment")
                ],
                dynamic_endpoint_configs=[
                    _shared.EndpointsConfigDump.DynamicEndpointConfig(
                        version_info=v, endpoint_config=r, last_updated=t
                    )
                    for v, r, t in dynamic.resources(ENDPOINT)
                ],
            )
        )
    dump = config_dump_pb2.ConfigDump(configs=[_pack(_redacted(c)) for c in configs])
    out: dict[str, Any] = json_format.MessageToDict(dump, preserving_proto_field_name=True)
    return _select(out, params.get("resource"), params.get("name_regex"))


class _Dynamic:
    """What the xDS client accepted, per type: (version, the resource's Any, when)."""

    def __init__(self, xds: AdsClient | None) -> None:
        self.types = xds.state.types if xds is not None else {}
        # Accepted at monotonic ``now``; shown as wall-clock times.
        self.offset = time.time() - time.monotonic()

    def version(self, type_url: str) -> str:
        ts = self.types.get(type_url)
        return ts.version_info if ts is not None else ""

    def resources(self, type_url: str) -> list[tuple[str, any_pb2.Any, Timestamp]]:
        ts = self.types.get(type_url)
        if ts is None:
            return []
        return [
            (ts.versions.get(name, ts.version_info), packed, _timestamp(at + self.offset))
            for name, (packed, at) in sorted(ts.raw.items())
        ]

    def messages(self, type_url: str, kind: Callable[[], Message]) -> Iterable[Message]:
        for _, packed, _ in self.resources(type_url):
            msg = kind()
            packed.Unpack(msg)
            yield msg


def _inline_routes(boot: bootstrap_pb2.Bootstrap, dynamic: Iterable[Message]) -> Iterable[Message]:
    """Route configurations written inline in connection managers (Envoy lists them as static)."""
    for listener in (*boot.static_resources.listeners, *dynamic):
        assert isinstance(listener, listener_pb2.Listener)
        for chain in (*listener.filter_chains, listener.default_filter_chain):
            for f in chain.filters:
                if f.typed_config.type_url == _HCM_URL:
                    manager = hcm.HttpConnectionManager()
                    f.typed_config.Unpack(manager)
                    if manager.HasField("route_config"):
                        yield manager.route_config


def _name(packed: any_pb2.Any, kind: Callable[[], Message]) -> str:
    msg = kind()
    packed.Unpack(msg)
    return str(getattr(msg, "name", ""))


def _pack(msg: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def _timestamp(wall: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(wall * 1e9))
    return stamp


def _redacted(msg: Message) -> Message:
    """A copy of ``msg`` with every field marked ``udpa.annotations.sensitive`` (and everything
    packed in an Any below it) shown as ``[redacted]``, as Envoy's config dump does."""
    copy = type(msg)()
    copy.CopyFrom(msg)
    _redact(copy, sensitive=False)
    return copy


def _redact(msg: Message, sensitive: bool) -> None:
    if isinstance(msg, any_pb2.Any):
        inner = _unpacked(msg)
        if inner is not None:
            _redact(inner, sensitive)
            msg.Pack(inner)
        return
    for field, value in msg.ListFields():
        secret = sensitive or field.GetOptions().Extensions[sensitive_pb2.sensitive]
        if field.type == field.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                continue
            for item in value if field.is_repeated else (value,):
                _redact(item, secret)
        elif secret and field.type in (field.TYPE_STRING, field.TYPE_BYTES):
            marker: str | bytes = REDACTED if field.type == field.TYPE_STRING else REDACTED.encode()
            if field.is_repeated:
                value[:] = [marker] * len(value)
            else:
                setattr(msg, field.name, marker)


def _unpacked(packed: any_pb2.Any) -> Message | None:
    try:
        cls = symbol_database.Default().GetSymbol(packed.type_url.rsplit("/", 1)[-1])
    except KeyError:
        return None
    msg: Message = cls()
    packed.Unpack(msg)
    return msg


def _select(dump: dict[str, Any], resource: str | None, name_regex: str | None) -> dict[str, Any]:
    """Envoy's ``?resource=`` (the entries of one repeated field of the dumps, each with its
    ``@type``) and ``?name_regex=`` (only entries whose name it matches: RE2, anywhere in it)."""
    if resource is None and name_regex is None:
        return dump
    match = compile_regex(f".*(?:{name_regex}).*").fullmatch if name_regex else None
    entries: list[dict[str, Any]] = []
    for config in dump.get("configs", []):
        descriptor = _descriptor(config.get("@type", ""))
        for key, value in config.items():
            if not isinstance(value, list) or (resource is not None and key != resource):
                continue
            entry_type = descriptor.fields_by_name[key].message_type.full_name if descriptor else ""
            for entry in value:
                if match is None or match(_entry_name(entry).encode()):
                    entries.append(
                        {"@type": f"type.googleapis.com/{entry_type}", **entry} if resource else entry
                    )
    return {"configs": entries}


def _descriptor(type_url: str) -> Any:
    try:
        return symbol_database.Default().GetSymbol(type_url.rsplit("/", 1)[-1]).DESCRIPTOR
    except KeyError:
        return None


def _entry_name(entry: dict[str, Any]) -> str:
    if "name" in entry:
        return str(entry["name"])
    for value in entry.values():
        if isinstance(value, dict) and "name" in value:
            return str(value["name"])
    return ""
