"""The notifysvc process: the feed of ended jobs and the consumer of NOTIFY tasks."""

from __future__ import annotations

import asyncio

from meshkit.domain.callbacks import CallbackStore
from meshkit.jobs import JobStore
from meshkit.service import ServiceContext
from meshkit.topology import JOB_ENDS, NOTIFY, work_stream
from meshkit.worker import Worker
from notifysvc.feed import JobEndFeed
from notifysvc.handler import NotifyHandler
from notifysvc.sender import CallbackSender

__all__ = ["serve"]


async def serve(ctx: ServiceContext) -> None:
    callbacks = await CallbackStore.open(ctx.js)
    sender = CallbackSender()
    handler = NotifyHandler(await JobStore.open(ctx.js), callbacks, sender)
    worker = Worker(
        ctx.nc, ctx.js, work_stream(NOTIFY, ctx.settings.timing), handler, concurrency=32
    )
    feed = JobEndFeed(ctx.js, JOB_ENDS, callbacks)
    try:
        await asyncio.gather(worker.run(ctx.stop), feed.run(ctx.stop))
    finally:
        await sender.close()
