"""Waiting in tests on the condition itself, never on a fixed sleep.

A fixed sleep is either too short on a busy machine (the test fails for no reason) or too
long everywhere else; a test waits for what it needs instead, polling where the code under
test offers no event to await:

    pid = wait_until(lambda: status().pid, what="a pid")         # in plain functions
    await until(lambda: worker.handled == 1, what="one handled")  # in coroutines
    await until(lambda: pending(js, ws), ...)                     # the condition may be async

Each returns the condition's first truthy value and fails the test, naming `what`, when the
limit passes first. Where letting time pass is the point (nothing may happen meanwhile),
`holds_throughout` checks the condition across the whole window rather than once at its end.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["holds_throughout", "until", "wait_until"]

T = TypeVar("T")

POLL_S = 0.02


def wait_until(predicate: Callable[[], T], timeout_s: float = 10.0, what: str = "") -> T:
    """Poll `predicate` from a plain function until it returns a truthy value."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(POLL_S)
    return value


async def until(
    condition: Callable[[], T | Awaitable[T]], timeout_s: float = 10.0, what: str = ""
) -> T:
    """Poll `condition` (a function, or one returning an awaitable) until it is truthy,
    without blocking the event loop meanwhile."""
    deadline = time.monotonic() + timeout_s
    while not (value := await _value_of(condition)):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or condition}")
        await asyncio.sleep(POLL_S)
    return value


async def holds_throughout(
    condition: Callable[[], object | Awaitable[object]], duration_s: float, what: str = ""
) -> None:
    """Check `condition` again and again for `duration_s`: for a test whose point is that
    something does not happen (a late clean-up path must not undo what a call left)."""
    deadline = time.monotonic() + duration_s
    while True:
        assert await _value_of(condition), f"no longer true: {what or condition}"
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(POLL_S)


async def _value_of(condition: Callable[[], T | Awaitable[T]]) -> T:
    value = condition()
    if inspect.isawaitable(value):
        return await value
    return value
