from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TlsPrincipal(_message.Message):
    __slots__ = ("groups", "signature_algorithms")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_ALGORITHMS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedScalarFieldContainer[str]
    signature_algorithms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, groups: _Optional[_Iterable[str]] = ..., signature_algorithms: _Optional[_Iterable[str]] = ...) -> None: ...
