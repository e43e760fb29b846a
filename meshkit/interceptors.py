"""Server interceptors that wrap each method's handler once, not once per call."""

from __future__ import annotations

import abc
import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from meshkit.metrics import RPC_DURATION, RPC_REQUESTS

__all__ = ["MethodWrapper", "MetricsInterceptor"]


class MethodWrapper(grpc.aio.ServerInterceptor, abc.ABC):
    """Wraps the handler of every method it applies to, building each wrapper on first use.

    A subclass says what to wrap with (`wrap`) and which methods to leave alone (`applies`);
    the wrapped handler is cached by method name, so a call costs one dict lookup here.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def applies(self, method: str) -> bool:
        """Whether `method` ('/package.Service/Method') gets wrapped; every one by default."""
        return True

    @abc.abstractmethod
    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler that serves `method` in place of `handler`."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if (cached := self._handlers.get(method)) is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or not self.applies(method):
            return handler
        wrapped = self.wrap(method, handler)
        self._handlers[method] = wrapped
        return wrapped


def _final_code(context: Any, failure: BaseException | None) -> str:
    """The status a call ended with: the one its handler set or aborted with, OK after a
    plain return, CANCELLED when the client went away, UNKNOWN after an escaped exception."""
    if failure is None or isinstance(failure, grpc.aio.AbortError):
        code: grpc.StatusCode | None = context.code()
        return (code or grpc.StatusCode.OK).name
    if isinstance(failure, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.UNKNOWN.name


class MetricsInterceptor(MethodWrapper):
    """Counts every unary and server-streaming call by method and final status code, and
    times it until the handler returns or its stream ends (meshkit.metrics). Installed
    outermost, so what the interceptors inside it refuse (authentication, validation) counts.
    """

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        duration = RPC_DURATION.labels(method)

        def done(context: Any, started: float, failure: BaseException | None) -> None:
            duration.observe(time.perf_counter() - started)
            RPC_REQUESTS.labels(method, _final_code(context, failure)).inc()

        if handler.unary_unary:
            inner_unary = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                started, failure = time.perf_counter(), None
                try:
                    return await inner_unary(request, context)
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    done(context, started, failure)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                started, failure = time.perf_counter(), None
                try:
                    answers = inner_stream(request, context)
                    if inspect.isawaitable(answers):
                        # A handler that writes with context.write (grpc's Health/Watch).
                        await answers
                        return
                    async for item in answers:
                        yield item
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    done(context, started, failure)

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler
