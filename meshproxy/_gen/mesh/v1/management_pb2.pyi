import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InventoryReport(_message.Message):
    __slots__ = ("node_id", "peers")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    peers: _containers.RepeatedCompositeFieldContainer[PeerInventory]
    def __init__(self, node_id: _Optional[str] = ..., peers: _Optional[_Iterable[_Union[PeerInventory, _Mapping]]] = ...) -> None: ...

class InventoryReportAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PeerConnections(_message.Message):
    __slots__ = ("direction", "group", "sigalg", "version", "count")
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    SIGALG_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    direction: str
    group: str
    sigalg: str
    version: str
    count: int
    def __init__(self, direction: _Optional[str] = ..., group: _Optional[str] = ..., sigalg: _Optional[str] = ..., version: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class PeerInventory(_message.Message):
    __slots__ = ("peer", "first_seen", "last_seen", "classical_fallbacks", "last_classical_fallback", "connections", "reporters")
    PEER_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    CLASSICAL_FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    LAST_CLASSICAL_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    REPORTERS_FIELD_NUMBER: _ClassVar[int]
    peer: str
    first_seen: _timestamp_pb2.Timestamp
    last_seen: _timestamp_pb2.Timestamp
    classical_fallbacks: int
    last_classical_fallback: _timestamp_pb2.Timestamp
    connections: _containers.RepeatedCompositeFieldContainer[PeerConnections]
    reporters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, peer: _Optional[str] = ..., first_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., classical_fallbacks: _Optional[int] = ..., last_classical_fallback: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., connections: _Optional[_Iterable[_Union[PeerConnections, _Mapping]]] = ..., reporters: _Optional[_Iterable[str]] = ...) -> None: ...

class InventoryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InventoryResponse(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[PeerInventory]
    def __init__(self, peers: _Optional[_Iterable[_Union[PeerInventory, _Mapping]]] = ...) -> None: ...

class ValidateRequest(_message.Message):
    __slots__ = ("mesh_yaml",)
    MESH_YAML_FIELD_NUMBER: _ClassVar[int]
    mesh_yaml: str
    def __init__(self, mesh_yaml: _Optional[str] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("mesh_yaml", "dry_run")
    MESH_YAML_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    mesh_yaml: str
    dry_run: bool
    def __init__(self, mesh_yaml: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("ok", "problems", "version", "applied", "groups")
    OK_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    problems: _containers.RepeatedScalarFieldContainer[str]
    version: str
    applied: bool
    groups: _containers.RepeatedCompositeFieldContainer[GroupSummary]
    def __init__(self, ok: _Optional[bool] = ..., problems: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., applied: _Optional[bool] = ..., groups: _Optional[_Iterable[_Union[GroupSummary, _Mapping]]] = ...) -> None: ...

class GroupSummary(_message.Message):
    __slots__ = ("name", "resources")
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Names
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Names, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    name: str
    resources: _containers.MessageMap[str, Names]
    def __init__(self, name: _Optional[str] = ..., resources: _Optional[_Mapping[str, Names]] = ...) -> None: ...

class Names(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class GetConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetConfigResponse(_message.Message):
    __slots__ = ("version", "mesh_yaml", "source", "applied_at", "groups", "xds_resources_file")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESH_YAML_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    XDS_RESOURCES_FILE_FIELD_NUMBER: _ClassVar[int]
    version: str
    mesh_yaml: str
    source: str
    applied_at: _timestamp_pb2.Timestamp
    groups: _containers.RepeatedCompositeFieldContainer[GroupSummary]
    xds_resources_file: str
    def __init__(self, version: _Optional[str] = ..., mesh_yaml: _Optional[str] = ..., source: _Optional[str] = ..., applied_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., groups: _Optional[_Iterable[_Union[GroupSummary, _Mapping]]] = ..., xds_resources_file: _Optional[str] = ...) -> None: ...

class ListProxiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProxiesResponse(_message.Message):
    __slots__ = ("proxies",)
    PROXIES_FIELD_NUMBER: _ClassVar[int]
    proxies: _containers.RepeatedCompositeFieldContainer[Proxy]
    def __init__(self, proxies: _Optional[_Iterable[_Union[Proxy, _Mapping]]] = ...) -> None: ...

class Proxy(_message.Message):
    __slots__ = ("node_id", "group", "user_agent", "connected_at", "stream_kind", "peer", "nacking", "resources")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    STREAM_KIND_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    NACKING_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    group: str
    user_agent: str
    connected_at: _timestamp_pb2.Timestamp
    stream_kind: str
    peer: str
    nacking: bool
    resources: _containers.RepeatedCompositeFieldContainer[ResourceState]
    def __init__(self, node_id: _Optional[str] = ..., group: _Optional[str] = ..., user_agent: _Optional[str] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stream_kind: _Optional[str] = ..., peer: _Optional[str] = ..., nacking: _Optional[bool] = ..., resources: _Optional[_Iterable[_Union[ResourceState, _Mapping]]] = ...) -> None: ...

class ResourceState(_message.Message):
    __slots__ = ("type_url", "version_sent", "version_acked", "last_nack_message", "nack_count", "nacking", "subscribed", "wildcard")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_SENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_ACKED_FIELD_NUMBER: _ClassVar[int]
    LAST_NACK_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    NACKING_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    WILDCARD_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    version_sent: str
    version_acked: str
    last_nack_message: str
    nack_count: int
    nacking: bool
    subscribed: _containers.RepeatedScalarFieldContainer[str]
    wildcard: bool
    def __init__(self, type_url: _Optional[str] = ..., version_sent: _Optional[str] = ..., version_acked: _Optional[str] = ..., last_nack_message: _Optional[str] = ..., nack_count: _Optional[int] = ..., nacking: _Optional[bool] = ..., subscribed: _Optional[_Iterable[str]] = ..., wildcard: _Optional[bool] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Event(_message.Message):
    __slots__ = ("at", "kind", "node_id", "group", "type_url", "version", "message")
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    kind: str
    node_id: str
    group: str
    type_url: str
    version: str
    message: str
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., node_id: _Optional[str] = ..., group: _Optional[str] = ..., type_url: _Optional[str] = ..., version: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ShiftTrafficRequest(_message.Message):
    __slots__ = ("service", "weights", "dry_run")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    service: str
    weights: _containers.ScalarMap[str, int]
    dry_run: bool
    def __init__(self, service: _Optional[str] = ..., weights: _Optional[_Mapping[str, int]] = ..., dry_run: _Optional[bool] = ...) -> None: ...
