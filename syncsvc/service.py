"""The syncsvc process: the discover and per-repository sync consumers, side by side."""

from __future__ import annotations

import asyncio
from typing import Any

from meshkit.blob import open_blob_store
from meshkit.config import GITHUB_CONCURRENCY_BUDGET
from meshkit.jobs import JobStore
from meshkit.service import ServiceContext
from meshkit.topology import DISCOVER, SYNC, Buckets, work_stream
from meshkit.worker import Worker
from syncsvc.fanin import FanIn
from syncsvc.handler import DiscoverHandler, SyncHandler
from syncsvc.http_cache import SharedResponseCache
from syncsvc.plan import Planner
from syncsvc.replicas import LiveReplicas
from syncsvc.sources.factory import open_source

__all__ = ["serve"]


async def serve(ctx: ServiceContext) -> None:
    settings = ctx.settings
    blobs = open_blob_store(settings.blob_url)
    jobs = await JobStore.open(ctx.js)
    fanin = FanIn(ctx.js, jobs, await ctx.js.key_value(Buckets.OUTCOMES.name))
    cache = await SharedResponseCache.open(ctx.js, blobs)
    replicas = LiveReplicas(ctx.js)
    await replicas.beat()  # count the others before the first request takes a share
    source = open_source(
        settings,
        cache,
        budgets=await ctx.js.key_value(Buckets.GITHUB_BUDGETS.name),
        in_flight=lambda: replicas.share(GITHUB_CONCURRENCY_BUDGET),
    )
    planner = Planner(
        blobs,
        await ctx.js.key_value(Buckets.BUNDLES.name),
        source,
        window=settings.sync.window,
    )
    discover = DiscoverHandler(ctx.js, jobs, fanin, planner)
    sync = SyncHandler(jobs, fanin, blobs, source, settings.sync)
    workers: list[Worker[Any]] = [
        Worker(ctx.nc, ctx.js, work_stream(DISCOVER, settings.timing), discover, concurrency=4),
        Worker(
            ctx.nc,
            ctx.js,
            work_stream(SYNC, settings.timing),
            sync,
            # The replica's part of GitHub's concurrency, as its requests get (sources/).
            concurrency=lambda: min(
                settings.sync.concurrency, replicas.share(GITHUB_CONCURRENCY_BUDGET)
            ),
        ),
    ]
    try:
        await asyncio.gather(replicas.run(ctx.stop), *(w.run(ctx.stop) for w in workers))
    finally:
        await source.close()
        await blobs.close()
