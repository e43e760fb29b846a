"""The mergesvc process: one consumer of merge tasks."""

from __future__ import annotations

from mergesvc.handler import MergeHandler
from meshkit.blob import open_blob_store
from meshkit.jobs import JobStore
from meshkit.service import ServiceContext
from meshkit.topology import MERGE, Buckets, work_stream
from meshkit.worker import Worker

__all__ = ["serve"]


async def serve(ctx: ServiceContext) -> None:
    blobs = open_blob_store(ctx.settings.blob_url)
    handler = MergeHandler(
        ctx.js,
        await JobStore.open(ctx.js),
        await ctx.js.key_value(Buckets.OUTCOMES.name),
        await ctx.js.key_value(Buckets.BUNDLES.name),
        await ctx.js.key_value(Buckets.MODELS.name),
        blobs,
        training=ctx.settings.train.enabled,
    )
    worker = Worker(ctx.nc, ctx.js, work_stream(MERGE, ctx.settings.timing), handler, concurrency=4)
    try:
        await worker.run(ctx.stop)
    finally:
        await blobs.close()
