"""gRPC servers built one way: validation, error mapping, health, reflection, tracing, metrics.

- Requests are checked against the rules in the contracts (protovalidate) by one
  interceptor before any handler runs: INVALID_ARGUMENT naming each field and rule.
- Domain errors are mapped to gRPC status codes in one place (`STATUS_OF`), by the same
  interceptor, so handlers raise meaningful exceptions and never build statuses themselves.
- The OpenTelemetry server interceptor is installed when tracing is on (meshkit.telemetry).
- Every call is counted by method and final status code, and timed (MetricsInterceptor).
- Every server serves grpc.health.v1.Health (a status per service) and reflection.
- Every server authenticates its callers and applies its access rules (meshkit.auth) before
  anything else, and has limits: a small receive size (requests are tiny; answers may be
  large), a cap on concurrent calls, and requests that do not decode answer INVALID_ARGUMENT.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc
import protovalidate
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from meshkit.auth import Authenticator, AuthInterceptor, Rule, Unauthenticated
from meshkit.errors import (
    BlobNotFoundError,
    ConfigError,
    ConflictError,
    InvalidBlobKeyError,
    JobNotFoundError,
    LimitExceeded,
    MeshError,
    StreamFullError,
)
from meshkit.interceptors import MethodWrapper, MetricsInterceptor
from meshkit.telemetry import tracing_enabled
from meshkit.validation import describe_violations

__all__ = [
    "MAX_RECEIVE_BYTES",
    "MAX_SEND_BYTES",
    "RETRY_AFTER_KEY",
    "STATUS_OF",
    "FailedPrecondition",
    "GuardInterceptor",
    "InvalidArgument",
    "NotFound",
    "ServerBundle",
    "create_server",
]

log = logging.getLogger(__name__)

MAX_SEND_BYTES = 64 * 1024 * 1024
"""Answers may be large (a bundle index); downloads stream in chunks well below this."""
MAX_RECEIVE_BYTES = 64 * 1024
"""Every request of the contracts is a few names and numbers: anything larger is refused
before it is buffered (RESOURCE_EXHAUSTED)."""
DEFAULT_MAX_CONCURRENT_RPCS = 1000


class _Undecodable:
    """Stands in for a request whose bytes do not parse; the guard answers INVALID_ARGUMENT."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _decoding(
    deserializer: Callable[[bytes], Any] | None, method: str
) -> Callable[[bytes], Any] | None:
    """Wrap a request deserializer so bad bytes become _Undecodable, not an UNKNOWN status
    that names a Python exception."""
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return _Undecodable(
                f"the request to {method} is not a valid protobuf message of its type; "
                "send the message the contract declares"
            )

    return decode


# Exceptions whose text comes from libraries, not from us: the client gets this instead.
_FIXED_MESSAGES: list[tuple[type[BaseException], str]] = [
    (TimeoutError, "a dependency did not answer in time; try again shortly"),
    (ConnectionError, "a dependency is unreachable; try again shortly"),
]


class NotFound(MeshError):
    """The thing a request names does not exist; the message says what to do."""


class InvalidArgument(MeshError):
    """A request field the contract's rules cannot check is wrong; the message says how."""


class FailedPrecondition(MeshError):
    """The request is fine, but what it names (or the system) is in no state to do it; the
    message says why, and what would change that."""


STATUS_OF: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (JobNotFoundError, grpc.StatusCode.NOT_FOUND),
    (BlobNotFoundError, grpc.StatusCode.NOT_FOUND),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidBlobKeyError, grpc.StatusCode.INVALID_ARGUMENT),
    (ConflictError, grpc.StatusCode.ABORTED),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (StreamFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TimeoutError, grpc.StatusCode.UNAVAILABLE),
    (ConnectionError, grpc.StatusCode.UNAVAILABLE),
]


RETRY_AFTER_KEY = "retry-after"
"""Trailing metadata of a refusal that knows when to retry: whole seconds, as HTTP's
Retry-After (Envoy passes it on as that header of the 429). No google.rpc.RetryInfo in the
status details: Envoy's transcoder renders details only of types in the descriptor image,
and answers an empty body for one it does not know."""


def _retry_trailers(exc: BaseException) -> tuple[tuple[str, str], ...]:
    if not isinstance(exc, LimitExceeded) or exc.retry_after_s is None:
        return ()
    return ((RETRY_AFTER_KEY, str(max(1, math.ceil(exc.retry_after_s)))),)


def _status_for(exc: BaseException) -> grpc.StatusCode | None:
    for kind, code in STATUS_OF:
        if isinstance(exc, kind):
            return code
    return None


class GuardInterceptor(MethodWrapper):
    """Checks each request against the contract's rules, then maps domain errors to statuses.

    INVALID_ARGUMENT names every broken field and rule; a domain error becomes its status
    (STATUS_OF) with its message; anything unexpected is INTERNAL, logged, its details kept
    out of the answer. Wrapped handlers are built once per method, not once per call.
    """

    def __init__(self, *, validate: bool = True) -> None:
        super().__init__()
        self.validator = protovalidate.Validator() if validate else None

    def _problem(self, request: Any) -> str | None:
        if isinstance(request, _Undecodable):
            return request.problem
        if self.validator is None:
            return None
        try:
            self.validator.validate(request)
        except protovalidate.ValidationError as exc:
            return describe_violations(exc)
        return None

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        decode = _decoding(handler.request_deserializer, method)

        async def fail(context: Any, exc: Exception) -> None:
            code = _status_for(exc)
            if code is None:
                log.exception("%s failed", method, exc_info=exc)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}")
            fixed = next((text for kind, text in _FIXED_MESSAGES if isinstance(exc, kind)), None)
            await context.abort(code, fixed or str(exc), trailing_metadata=_retry_trailers(exc))

        if handler.unary_unary:
            inner_unary = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                if problem := self._problem(request):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
                try:
                    return await inner_unary(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await fail(context, exc)

            return grpc.unary_unary_rpc_method_handler(unary, decode, handler.response_serializer)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                if problem := self._problem(request):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
                try:
                    answers = inner_stream(request, context)
                    if inspect.isawaitable(answers):
                        # A handler that writes with context.write (grpc's Health/Watch).
                        await answers
                        return
                    async for item in answers:
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await fail(context, exc)

            return grpc.unary_stream_rpc_method_handler(stream, decode, handler.response_serializer)
        return handler


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
    auth: Authenticator | None,
    rules: Mapping[str, Rule] | None = None,
    validate: bool = True,
    trace: bool = True,
    max_receive_bytes: int = MAX_RECEIVE_BYTES,
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS,
) -> ServerBundle:
    """Build a server on address ('[::]:0' picks a free port) with the given servicers.

    register holds (add_XServicer_to_server, servicer, full service name) triples; rules
    says, per full method name ('/pkg.Service/Method'), what a caller must hold (a method
    without a rule is refused; health and reflection are open). `auth` may be None only for
    a server with no rules (a worker's health endpoint).
    Health starts NOT_SERVING; call set_serving(True) once dependencies are reachable.
    """
    interceptors: list[grpc.aio.ServerInterceptor] = [
        MetricsInterceptor(),
        AuthInterceptor(auth, rules or {}),
        GuardInterceptor(validate=validate),
    ]
    if trace and tracing_enabled():
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        interceptors.insert(0, aio_server_interceptor())
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.max_receive_message_length", max_receive_bytes),
            # Requests are small: keep the HTTP/2 receive window at its 64 KiB start. With
            # BDP probing the window grows to megabytes, and a client streaming a huge
            # message gets that much buffered before the size check refuses it.
            ("grpc.http2.bdp_probe", 0),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
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
