"""Client side of meshkit.auth: channels that send `authorization: Bearer <token>` on every call.

    channel = bearer_channel("localhost:50051", token)          # blocking stubs (the CLI)
    channel = aio_bearer_channel("localhost:50051", token)      # asyncio stubs

Plain-text channels: the servers here listen on loopback or sit behind a TLS-terminating
proxy (docs/security.md). A call that passes its own metadata keeps it; the token is added.
When tracing is on (meshkit.telemetry), every call is a client span whose trace context
travels to the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from meshkit.telemetry import aio_client_interceptors, trace_channel

__all__ = ["aio_bearer_channel", "bearer_channel", "bearer_metadata"]


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _with_token(details: Any, token: str) -> Any:
    metadata = grpc.aio.Metadata(*(details.metadata or ()), *bearer_metadata(token))
    return details._replace(metadata=metadata)


class _Details:
    """grpc's ClientCallDetails with one field replaced (the sync API's type is abstract)."""

    def __init__(self, details: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class _SyncBearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
):
    def __init__(self, token: str) -> None:
        self.token = token

    def _details(self, details: grpc.ClientCallDetails) -> Any:
        return _Details(details, [*(details.metadata or ()), *bearer_metadata(self.token)])

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)


def bearer_channel(target: str, token: str | None) -> grpc.Channel:
    """A blocking channel to `target` that authenticates every call with `token` (if any)."""
    channel = trace_channel(grpc.insecure_channel(target))
    return grpc.intercept_channel(channel, _SyncBearer(token)) if token else channel


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self.token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details, self.token), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self.token = token

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details, self.token), request)


def aio_bearer_channel(target: str, token: str | None) -> grpc.aio.Channel:
    """An asyncio channel to `target` that authenticates every call with `token` (if any)."""
    interceptors = aio_client_interceptors()
    if token:
        interceptors += [_AioUnaryUnary(token), _AioUnaryStream(token)]
    return grpc.aio.insecure_channel(target, interceptors=interceptors)
