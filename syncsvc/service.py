"""The syncsvc process: the discover and per-repository sync consumers, side by side."""

from __future__ import annotations

import asyncio
from typing import Any

from contextmesh.job.v1 import job_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks

from meshkit.blob import open_blob_store
from meshkit.jobs import JobStore
from meshkit.service import ServiceContext
from meshkit.topology import DISCOVER, SYNC, Buckets, work_stream
from meshkit.worker import Failure, Worker
from syncsvc.fanin import FanIn
from syncsvc.http_cache import SharedResponseCache
from syncsvc.plan import Discovery
from syncsvc.repository import RepoSync, failed_outcome
from syncsvc.sources.factory import open_source

__all__ = ["serve"]


async def serve(ctx: ServiceContext) -> None:
    settings = ctx.settings
    blobs = open_blob_store(settings.blob_url)
    jobs = await JobStore.open(ctx.js)
    fanin = FanIn(ctx.js, jobs, await ctx.js.key_value(Buckets.OUTCOMES.name))
    cache = SharedResponseCache(await ctx.js.key_value(Buckets.HTTP_CACHE.name), blobs)
    source = open_source(settings, cache)
    discovery = Discovery(
        ctx.js, jobs, fanin, await ctx.js.key_value(Buckets.BUNDLES.name), blobs, source
    )
    repo_sync = RepoSync(jobs, fanin, blobs, source, settings.sync)

    async def discovery_failed(task: sync_tasks.DiscoverTask | None, failure: Failure) -> None:
        if task is None:
            return
        if failure.public is not None:
            code = failure.code or job_pb2.ERROR_CODE_SOURCE_REFUSED
            message = f"discovery failed: {failure.public}"
        else:
            code = job_pb2.ERROR_CODE_DISCOVERY_FAILED
            message = (
                "listing the repositories failed on every attempt; "
                "the task is parked for an operator to redrive"
            )
        await jobs.end(
            task.meta.job_id, job_pb2.JOB_STATE_FAILED, message, code=code, missing_ok=True
        )

    async def sync_failed(task: sync_tasks.SyncRepoTask | None, failure: Failure) -> None:
        # A repository that can never sync is one repository's failure, not the job's.
        if task is not None:
            reason = failure.public or (
                "the repository could not be synced on any attempt; "
                "the task is parked for an operator to redrive"
            )
            await fanin.record(task.meta.job_id, task.user, [failed_outcome(task, reason)])

    workers: list[Worker[Any]] = [
        Worker(
            ctx.nc,
            ctx.js,
            work_stream(DISCOVER, settings.timing),
            sync_tasks.DiscoverTask,
            discovery.handle,
            concurrency=4,
            on_dead_letter=discovery_failed,
        ),
        Worker(
            ctx.nc,
            ctx.js,
            work_stream(SYNC, settings.timing),
            sync_tasks.SyncRepoTask,
            repo_sync.handle,
            concurrency=settings.sync.concurrency,
            on_dead_letter=sync_failed,
        ),
    ]
    try:
        await asyncio.gather(*(w.run(ctx.stop) for w in workers))
    finally:
        await source.close()
        await blobs.close()
