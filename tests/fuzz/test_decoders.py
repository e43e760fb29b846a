"""Every public request and every task from arbitrary bytes: a clean refusal (undecodable, or
invalid with the broken rules named) or a valid message, never an unexpected exception.

Requests go through what a server does before any handler runs: the generated deserializer,
then the contracts' protovalidate rules (meshkit.rpc.GuardInterceptor). Tasks go through
meshkit.worker.decode_task, which every worker runs on every delivery. The messages are
found from the generated contracts, so a new RPC or task is fuzzed without a change here.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import contextmesh
import protovalidate
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import given

from meshkit.validation import describe_violations
from meshkit.worker import PermanentError, decode_task
from tests.fuzz.strategies import message_bytes


def _modules() -> list[Any]:
    return [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(contextmesh.__path__, "contextmesh.")
        if info.name.endswith("_pb2")
    ]


def _class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def request_types() -> list[type[Message]]:
    """The input message of every RPC of every contextmesh service."""
    found: dict[str, type[Message]] = {}
    for module in _modules():
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found[method.input_type.full_name] = _class(method.input_type)
    return [found[name] for name in sorted(found)]


def task_types() -> list[type[Message]]:
    """Every message a worker decodes from a work stream: the *Task messages of tasks.proto."""
    return sorted(
        (
            _class(descriptor)
            for module in _modules()
            if module.__name__.endswith(".tasks_pb2")
            for name, descriptor in module.DESCRIPTOR.message_types_by_name.items()
            if name.endswith("Task")
        ),
        key=lambda cls: cls.DESCRIPTOR.full_name,
    )


REQUESTS = request_types()
TASKS = task_types()
_validator = protovalidate.Validator()


def test_every_contract_is_found() -> None:
    names = {cls.DESCRIPTOR.full_name for cls in REQUESTS}
    assert names >= {
        "contextmesh.gateway.v1.RefreshBundleRequest",
        "contextmesh.gateway.v1.WatchJobRequest",
        "contextmesh.ops.v1.ListDeadLettersRequest",
        "contextmesh.search.v1.SearchRequest",
    }
    assert {cls.DESCRIPTOR.name for cls in TASKS} >= {
        "DiscoverTask",
        "SyncRepoTask",
        "MergeTask",
        "TrainTask",
    }


def _name(cls: type[Message]) -> str:
    return cls.DESCRIPTOR.full_name


@pytest.mark.parametrize("request_type", REQUESTS, ids=_name)
def test_requests_from_any_bytes(request_type: type[Message]) -> None:
    @given(message_bytes(request_type))
    def decode(data: bytes) -> None:
        try:
            request = request_type.FromString(data)
        except DecodeError:
            return  # gRPC answers a request it cannot deserialize itself
        try:
            _validator.validate(request)
        except protovalidate.ValidationError as exc:
            problem = describe_violations(exc)
            assert problem and problem.encode()  # INVALID_ARGUMENT that says what to fix
            return
        assert request_type.FromString(request.SerializeToString()) == request

    decode()


@pytest.mark.parametrize("task_type", TASKS, ids=_name)
def test_tasks_from_any_bytes(task_type: type[Message]) -> None:
    @given(message_bytes(task_type))
    def decode(data: bytes) -> None:
        try:
            task = decode_task(task_type, data)
        except PermanentError as exc:  # parked in the dead-letter stream with this reason
            reason = str(exc)
            assert reason.startswith(("undecodable ", "invalid ")) and reason.encode()
            return
        _validator.validate(task)
        assert decode_task(task_type, task.SerializeToString()) == task

    decode()
