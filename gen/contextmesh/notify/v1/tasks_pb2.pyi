from contextmesh._vendor.buf.validate import validate_pb2 as _validate_pb2
from contextmesh.task.v1 import task_pb2 as _task_pb2
from contextmesh.validate.v1 import rules_pb2 as _rules_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NotifyTask(_message.Message):
    __slots__ = ("meta", "user")
    META_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    meta: _task_pb2.TaskMeta
    user: str
    def __init__(self, meta: _Optional[_Union[_task_pb2.TaskMeta, _Mapping]] = ..., user: _Optional[str] = ...) -> None: ...
