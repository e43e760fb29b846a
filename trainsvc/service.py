"""The trainsvc process: one consumer of TRAIN, one training at a time per replica."""

from __future__ import annotations

import logging
import threading

from meshkit.blob import open_blob_store
from meshkit.domain.embedding import prepare_offline
from meshkit.jobs import JobStore
from meshkit.service import ServiceContext
from meshkit.topology import TRAIN, Buckets, work_stream
from meshkit.worker import Worker
from trainsvc.finetune import warm_up
from trainsvc.handler import TrainHandler

__all__ = ["serve"]

log = logging.getLogger(__name__)


async def serve(ctx: ServiceContext) -> None:
    prepare_offline()
    # Import torch and sentence-transformers while waiting for the first task (seconds).
    threading.Thread(target=_warm_up, name="trainsvc-warm-up", daemon=True).start()
    stream = work_stream(TRAIN, ctx.settings.timing)
    blobs = open_blob_store(ctx.settings.blob_url)
    handler = TrainHandler(
        jobs=await JobStore.open(ctx.js),
        models=await ctx.js.key_value(Buckets.MODELS.name),
        bundles=await ctx.js.key_value(Buckets.BUNDLES.name),
        blobs=blobs,
        settings=ctx.settings.train,
    )
    worker = Worker(ctx.nc, ctx.js, stream, handler, concurrency=1)
    log.info(
        "trainsvc consuming %s (ack wait %g s, deadline %g s, retries after %s s)",
        stream.stream,
        stream.ack_wait_s,
        stream.deadline_s,
        ", ".join(f"{d:g}" for d in stream.retry_backoff_s),
    )
    try:
        # A short grace: a training cannot finish in it anyway; its task goes back at once.
        await worker.run(ctx.stop, grace_s=1.0)
    finally:
        await blobs.close()


def _warm_up() -> None:
    try:
        warm_up()
    except Exception as exc:  # the first training will raise it properly
        log.warning("warm-up import failed: %s", exc)
