from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WebhookOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEBHOOK_OUTCOME_UNSPECIFIED: _ClassVar[WebhookOutcome]
    WEBHOOK_OUTCOME_ACCEPTED: _ClassVar[WebhookOutcome]
    WEBHOOK_OUTCOME_PONG: _ClassVar[WebhookOutcome]
    WEBHOOK_OUTCOME_IGNORED: _ClassVar[WebhookOutcome]
    WEBHOOK_OUTCOME_DUPLICATE: _ClassVar[WebhookOutcome]
WEBHOOK_OUTCOME_UNSPECIFIED: WebhookOutcome
WEBHOOK_OUTCOME_ACCEPTED: WebhookOutcome
WEBHOOK_OUTCOME_PONG: WebhookOutcome
WEBHOOK_OUTCOME_IGNORED: WebhookOutcome
WEBHOOK_OUTCOME_DUPLICATE: WebhookOutcome

class ReceiveGithubWebhookRequest(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: _httpbody_pb2.HttpBody
    def __init__(self, body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class ReceiveGithubWebhookResponse(_message.Message):
    __slots__ = ("outcome", "user", "message")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    outcome: WebhookOutcome
    user: str
    message: str
    def __init__(self, outcome: _Optional[_Union[WebhookOutcome, str]] = ..., user: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
