import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignRequest(_message.Message):
    __slots__ = ("csr_pem", "requested_ttl", "node_id")
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_TTL_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    csr_pem: str
    requested_ttl: _duration_pb2.Duration
    node_id: str
    def __init__(self, csr_pem: _Optional[str] = ..., requested_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., node_id: _Optional[str] = ...) -> None: ...

class SignResponse(_message.Message):
    __slots__ = ("certificate_chain_pem", "trust_bundle_pem", "expires_at")
    CERTIFICATE_CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    TRUST_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    certificate_chain_pem: str
    trust_bundle_pem: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, certificate_chain_pem: _Optional[str] = ..., trust_bundle_pem: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TrustBundleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrustBundleResponse(_message.Message):
    __slots__ = ("trust_bundle_pem", "trust_domain")
    TRUST_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    trust_bundle_pem: str
    trust_domain: str
    def __init__(self, trust_bundle_pem: _Optional[str] = ..., trust_domain: _Optional[str] = ...) -> None: ...
