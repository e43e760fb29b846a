"""The mergesvc process: one consumer of merge tasks."""

from __future__ import annotations

from contextmesh.job.v1 import job_pb2
from contextmesh.merge.v1 import tasks_pb2 as merge_tasks

from mergesvc.merge import Merger
from meshkit.blob import open_blob_store
from meshkit.jobs import JobStore
from meshkit.service import ServiceContext
from meshkit.topology import MERGE, Buckets, work_stream
from meshkit.worker import Failure, Worker

__all__ = ["serve"]


async def serve(ctx: ServiceContext) -> None:
    blobs = open_blob_store(ctx.settings.blob_url)
    jobs = await JobStore.open(ctx.js)
    merger = Merger(
        ctx.js,
        jobs,
        await ctx.js.key_value(Buckets.OUTCOMES.name),
        await ctx.js.key_value(Buckets.BUNDLES.name),
        await ctx.js.key_value(Buckets.MODELS.name),
        blobs,
        training=ctx.settings.train.enabled,
    )

    async def merge_failed(task: merge_tasks.MergeTask | None, failure: Failure) -> None:
        if task is not None:
            await jobs.end(
                task.meta.job_id,
                job_pb2.JOB_STATE_FAILED,
                f"merge failed: {failure.public}"
                if failure.public
                else (
                    "the bundle could not be built on any attempt; the task is parked for an "
                    "operator to redrive, and the previous bundle still serves"
                ),
                code=job_pb2.ERROR_CODE_MERGE_FAILED,
                only_from=frozenset({job_pb2.JOB_STATE_MERGING}),
                missing_ok=True,
            )

    worker = Worker(
        ctx.nc,
        ctx.js,
        work_stream(MERGE, ctx.settings.timing),
        merge_tasks.MergeTask,
        merger.handle,
        concurrency=4,
        on_dead_letter=merge_failed,
    )
    try:
        await worker.run(ctx.stop)
    finally:
        await blobs.close()
