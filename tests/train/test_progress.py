"""The progress writer ends when training ends, even if its cancellation is swallowed."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from trainsvc.progress import ProgressReporter


class SwallowingJobs:
    """A job store whose update swallows cancellation, as asyncio.wait_for inside nats-py
    does on Python 3.11 when the cancellation and the reply land together. That race cannot
    be timed against a real server, so this stands in for it."""

    def __init__(self) -> None:
        self.updates = 0
        self.entered = asyncio.Event()

    async def update(self, job_id: str, mutation: Any) -> None:
        self.updates += 1
        self.entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return


async def test_close_ends_a_writer_whose_cancellation_was_swallowed() -> None:
    jobs = SwallowingJobs()
    reporter = ProgressReporter(
        jobs,  # type: ignore[arg-type]
        "01J00000000000000000000000",
        interval_s=0.01,
        stop=threading.Event(),
    )
    reporter.start()
    reporter.report(1, 4)
    await asyncio.wait_for(jobs.entered.wait(), 5)

    # Before the fix the writer went back to waiting for a report that never came, and the
    # training handler waited on it forever.
    await asyncio.wait_for(reporter.close(), 5)
    assert jobs.updates == 1


async def test_close_before_any_report_returns() -> None:
    reporter = ProgressReporter(
        SwallowingJobs(),  # type: ignore[arg-type]
        "01J00000000000000000000000",
        interval_s=0.01,
        stop=threading.Event(),
    )
    reporter.start()
    await asyncio.wait_for(reporter.close(), 5)
