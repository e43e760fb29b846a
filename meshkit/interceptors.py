"""Server interceptors that wrap each method's handler once, not once per call."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable

import grpc

__all__ = ["MethodWrapper"]


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
