from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SearchHit(_message.Message):
    __slots__ = ("repository", "score", "passage", "passage_source")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    repository: str
    score: float
    passage: str
    passage_source: str
    def __init__(self, repository: _Optional[str] = ..., score: _Optional[float] = ..., passage: _Optional[str] = ..., passage_source: _Optional[str] = ...) -> None: ...
