"""The searchsvc process: SearchService (with health and reflection) on CONTEXTMESH_SEARCH_ADDR.

Health stays NOT_SERVING until the base model is loaded, then follows the NATS connection,
so a probe (or the gateway's first call) never lands on a process that would need seconds of
imports to answer.
"""

from __future__ import annotations

import asyncio
import logging

from contextmesh.search.v1 import search_service_pb2_grpc

from meshkit.auth import Authenticator
from meshkit.blob import open_blob_store
from meshkit.domain.embedding import base_model_path, prepare_offline
from meshkit.rpc import create_server
from meshkit.service import ServiceContext, follow_nats_health
from meshkit.topology import Buckets
from searchsvc.cache import ByteLRU
from searchsvc.engine import Searcher
from searchsvc.servicer import SEARCH_RULES, SEARCH_SERVICE, SearchServicer

__all__ = ["serve"]

log = logging.getLogger(__name__)


async def serve(ctx: ServiceContext) -> None:
    prepare_offline()
    settings = ctx.settings
    auth = Authenticator.from_settings(settings.auth)
    blobs = open_blob_store(settings.blob_url)
    searcher = Searcher(
        bundles=await ctx.js.key_value(Buckets.BUNDLES.name),
        models=await ctx.js.key_value(Buckets.MODELS.name),
        blobs=blobs,
        base_model=base_model_path(settings.train.model_path),
        cache=ByteLRU(settings.train.model_cache_bytes),
        device=_device(settings.train.device),
    )
    bundle = create_server(
        settings.search_addr,
        [
            (
                search_service_pb2_grpc.add_SearchServiceServicer_to_server,
                SearchServicer(searcher),
                SEARCH_SERVICE,
            )
        ],
        auth=auth,
        rules=SEARCH_RULES,
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    await bundle.server.start()
    log.info("searchsvc listening on %s (port %d)", settings.search_addr, bundle.port)
    try:
        warm = asyncio.create_task(searcher.warm_up())
        stop = asyncio.create_task(ctx.stop.wait())
        await asyncio.wait({warm, stop}, return_when=asyncio.FIRST_COMPLETED)
        if warm.done():
            warm.result()  # a base model that cannot load is fatal: say so and exit
            log.info("base model loaded; serving")
            await follow_nats_health(ctx, bundle)
        else:
            warm.cancel()
        stop.cancel()
    finally:
        await bundle.server.stop(grace=5)
        searcher.close()
        await blobs.close()


def _device(setting: str) -> str:
    """Search runs anywhere: CUDA when present and allowed, CPU otherwise (never an error:
    the training device setting may name a GPU that only trainsvc's nodes have)."""
    if setting == "cpu":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
