"""A private thread pool for SDKs whose calls block (boto3, google-cloud-storage).

Each store owns its pool, so that slow uploads never starve the event loop's default
executor that the rest of the process shares, and the pool's size matches the SDK's
connection pool. The caller's contextvars (trace context) travel into the thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["BlockingCalls"]

P = ParamSpec("P")
T = TypeVar("T")


class BlockingCalls:
    """Run blocking functions on a bounded pool of threads and await them."""

    def __init__(self, name: str, max_workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"blob-{name}")

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def close(self) -> None:
        # Calls in flight finish in their threads; nothing waits for them here.
        self._pool.shutdown(wait=False, cancel_futures=True)
