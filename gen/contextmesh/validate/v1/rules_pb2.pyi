from contextmesh._vendor.buf.validate import validate_pb2 as _validate_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
GITHUB_NAME_FIELD_NUMBER: _ClassVar[int]
github_name: _descriptor.FieldDescriptor
JOB_ID_FIELD_NUMBER: _ClassVar[int]
job_id: _descriptor.FieldDescriptor
