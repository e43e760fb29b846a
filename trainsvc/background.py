"""Running blocking work on a daemon thread from async code.

asyncio.to_thread would do, except that its threads are joined at interpreter exit: a
training that cannot be interrupted mid-step would hold a stopping service for minutes. A
daemon thread is abandoned instead, and the work is asked to stop through a flag it polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["run_in_daemon_thread"]

T = TypeVar("T")


async def run_in_daemon_thread(
    fn: Callable[[], T], *, stop: threading.Event, name: str = "contextmesh-work"
) -> T:
    """Run fn on a new daemon thread and await its result.

    If the awaiting task is cancelled, stop is set (fn should poll it) and the cancellation
    propagates at once, without waiting for fn to notice.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting task, not lost in the thread
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, None, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=target, name=name, daemon=True).start()
    try:
        return await future
    except asyncio.CancelledError:
        stop.set()
        raise
