"""Training progress on the job record: step and total_steps, throttled.

The training thread reports every step; the job record (a KV entry every watcher of the job
receives) is written at most once per interval, plus once as soon as the total is known, so
a client sees the run start at once and then a steady trickle rather than a flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from contextmesh.job.v1 import job_pb2, job_record_pb2

from meshkit.jobs import JobStore, Mutation, is_final

__all__ = ["ProgressReporter"]

log = logging.getLogger(__name__)

JobState = job_pb2.JobState


class ProgressReporter:
    """Carries (step, total) from the training thread to the job record.

    `report` may be called from any thread; `start` begins writing and `close` ends it. When
    the job became final meanwhile (a caller cancelled it), `stop` is set so the training can
    give up.
    """

    def __init__(
        self, jobs: JobStore, job_id: str, *, interval_s: float, stop: threading.Event
    ) -> None:
        self.jobs = jobs
        self.job_id = job_id
        self.interval_s = interval_s
        self.stop = stop
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._latest: tuple[int, int] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def report(self, step: int, total: int) -> None:
        with self._lock:
            self._latest = (step, total)
        # RuntimeError: the loop is closing and the run is being abandoned.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake.set)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"progress-{self.job_id}")

    async def close(self) -> None:
        """Stop writing and wait for the writer to end.

        Cancelling alone is not enough: on Python 3.11 a cancellation that arrives as a NATS
        reply lands is swallowed by asyncio.wait_for inside nats-py, and the writer would then
        wait for a wake-up that never comes. The flag ends it at its next step whatever.
        """
        self._closed = True
        self._wake.set()
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        written: tuple[int, int] | None = None
        while True:
            await self._wake.wait()
            if self._closed:
                return
            self._wake.clear()
            with self._lock:
                latest = self._latest
            if latest is None or latest == written:
                continue
            try:
                await self.jobs.update(self.job_id, self._mutation(*latest))
                written = latest
            except Exception as exc:  # progress is best effort: training goes on
                log.warning("job %s: progress not recorded: %s", self.job_id, exc)
            if self._closed:
                return
            await asyncio.sleep(self.interval_s)

    def _mutation(self, step: int, total: int) -> Mutation:
        stop = self.stop

        def mutate(record: job_record_pb2.JobRecord) -> bool:
            if is_final(record.job.state):
                stop.set()  # cancelled while training: nobody wants this model any more
                return False
            training = record.job.training
            if record.job.state != JobState.JOB_STATE_TRAINING:
                return False
            if (training.step, training.total_steps) == (step, total):
                return False
            training.step = step
            training.total_steps = total
            return True

        return mutate
