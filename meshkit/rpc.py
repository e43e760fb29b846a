"""gRPC servers built one way: validation, error mapping, health, reflection, tracing.

- Requests are checked against the rules in the contracts (protovalidate) by one
  interceptor before any handler runs: INVALID_ARGUMENT naming each field and rule.
- Domain errors are mapped to gRPC status codes in one place (`STATUS_OF`), so handlers raise
  meaningful exceptions and never build statuses themselves.
- Every server serves grpc.health.v1.Health (a status per service) and reflection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import protovalidate
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from meshkit.errors import (
    BlobNotFoundError,
    ConfigError,
    ConflictError,
    InvalidBlobKeyError,
    JobNotFoundError,
    MeshError,
)

__all__ = [
    "STATUS_OF",
    "ErrorMappingInterceptor",
    "FailedPrecondition",
    "NotFound",
    "ServerBundle",
    "ValidationInterceptor",
    "create_server",
    "describe_violations",
]

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class NotFound(MeshError):
    """The thing a request names does not exist; the message says what to do."""


class FailedPrecondition(MeshError):
    """The request is valid but the system is not in a state to serve it yet."""


STATUS_OF: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (JobNotFoundError, grpc.StatusCode.NOT_FOUND),
    (BlobNotFoundError, grpc.StatusCode.NOT_FOUND),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (InvalidBlobKeyError, grpc.StatusCode.INVALID_ARGUMENT),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (ConflictError, grpc.StatusCode.ABORTED),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (TimeoutError, grpc.StatusCode.UNAVAILABLE),
    (ConnectionError, grpc.StatusCode.UNAVAILABLE),
]


def _status_for(exc: BaseException) -> grpc.StatusCode | None:
    for kind, code in STATUS_OF:
        if isinstance(exc, kind):
            return code
    return None


def describe_violations(exc: protovalidate.ValidationError) -> str:
    parts = []
    for violation in exc.violations:
        path = violation.proto.field
        field = ".".join(e.field_name for e in path.elements) if path else ""
        field = field or "request"
        parts.append(f"{field}: {violation.proto.message} [{violation.proto.rule_id}]")
    return "; ".join(parts)


def _wrap(
    handler: grpc.RpcMethodHandler,
    around_unary: Callable[[Any, Any, Callable[..., Awaitable[Any]]], Awaitable[Any]],
    around_stream: Callable[[Any, Any, Callable[..., AsyncIterator[Any]]], AsyncIterator[Any]],
) -> grpc.RpcMethodHandler:
    """Rewrap a unary-request handler so its behaviour runs inside around_*."""
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary(request: Any, context: Any) -> Any:
            return await around_unary(request, context, inner_uu)

        return grpc.unary_unary_rpc_method_handler(
            unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            async for item in around_stream(request, context, inner_us):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            stream, handler.request_deserializer, handler.response_serializer
        )
    return handler


class ValidationInterceptor(grpc.aio.ServerInterceptor):
    """Rejects requests that break the contracts' protovalidate rules."""

    def __init__(self) -> None:
        self.validator = protovalidate.Validator()

    def _check(self, request: Any) -> str | None:
        try:
            self.validator.validate(request)
        except protovalidate.ValidationError as exc:
            return describe_violations(exc)
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler

        async def unary(request: Any, context: Any, inner: Callable[..., Any]) -> Any:
            if problem := self._check(request):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
            return await inner(request, context)

        async def stream(request: Any, context: Any, inner: Callable[..., Any]) -> Any:
            if problem := self._check(request):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
            async for item in inner(request, context):
                yield item

        return _wrap(handler, unary, stream)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns domain errors into gRPC statuses; anything unexpected is INTERNAL, logged."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method

        async def fail(context: Any, exc: Exception) -> None:
            code = _status_for(exc)
            if code is None:
                log.exception("%s failed", method, exc_info=exc)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}")
            await context.abort(code, str(exc))

        async def unary(request: Any, context: Any, inner: Callable[..., Any]) -> Any:
            try:
                return await inner(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await fail(context, exc)

        async def stream(request: Any, context: Any, inner: Callable[..., Any]) -> Any:
            try:
                async for item in inner(request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await fail(context, exc)

        return _wrap(handler, unary, stream)


class ServerBundle:
    """A started-or-not gRPC server with its health servicer and bound port."""

    def __init__(
        self,
        server: grpc.aio.Server,
        port: int,
        health: health.aio.HealthServicer,
        service_names: Sequence[str],
    ) -> None:
        self.server = server
        self.port = port
        self.health = health
        self.service_names = list(service_names)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self.health.set(name, status)


def create_server(
    address: str,
    register: Sequence[tuple[Callable[[Any, grpc.aio.Server], None], Any, str]],
    *,
    validate: bool = True,
    trace: bool = True,
) -> ServerBundle:
    """Build a server on address ('[::]:0' picks a free port) with the given servicers.

    register holds (add_XServicer_to_server, servicer, full service name) triples.
    Health starts NOT_SERVING; call set_serving(True) once dependencies are reachable.
    """
    interceptors: list[grpc.aio.ServerInterceptor] = [ErrorMappingInterceptor()]
    if validate:
        interceptors.append(ValidationInterceptor())
    if trace:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        interceptors.insert(0, aio_server_interceptor())
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    names = []
    for add, servicer, name in register:
        add(servicer, server)
        names.append(name)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return ServerBundle(server, port, health_servicer, names)
