"""The gateway process: BundleService and OpsService on one gRPC server.

It never calls GitHub and never loads a model: refreshes are KV writes plus one publish,
progress is a watch of the job record, search is forwarded to the search service.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from contextmesh.gateway.v1 import bundle_service_pb2, bundle_service_pb2_grpc
from contextmesh.ops.v1 import ops_service_pb2, ops_service_pb2_grpc
from contextmesh.search.v1 import search_service_pb2_grpc

from gateway.bundle_service import BundleService
from gateway.bundles import BundleReader
from gateway.ops_service import OpsService
from gateway.redrive import Redriver
from gateway.refresh import Refresher
from gateway.sweeper import JobSweeper
from meshkit.blob import open_blob_store
from meshkit.jobs import JobStore
from meshkit.rpc import create_server
from meshkit.service import ServiceContext, follow_nats_health
from meshkit.topology import Buckets

__all__ = ["serve"]

log = logging.getLogger(__name__)

BUNDLE_SERVICE = bundle_service_pb2.DESCRIPTOR.services_by_name["BundleService"].full_name
OPS_SERVICE = ops_service_pb2.DESCRIPTOR.services_by_name["OpsService"].full_name


async def serve(ctx: ServiceContext) -> None:
    settings = ctx.settings
    jobs = await JobStore.open(ctx.js)
    active = await ctx.js.key_value(Buckets.ACTIVE.name)
    pointers = await ctx.js.key_value(Buckets.BUNDLES.name)
    blobs = open_blob_store(settings.blob_url)
    search_channel = grpc.aio.insecure_channel(settings.search_addr)
    refresher = Refresher(ctx.js, jobs, active)
    redriver = Redriver(ctx.js, jobs, refresher, await ctx.js.key_value(Buckets.REDRIVES.name))
    bundle_service = BundleService(
        refresher,
        jobs,
        BundleReader(pointers, blobs),
        search_service_pb2_grpc.SearchServiceStub(search_channel),
    )
    bundle = create_server(
        settings.gateway_addr,
        [
            (
                bundle_service_pb2_grpc.add_BundleServiceServicer_to_server,
                bundle_service,
                BUNDLE_SERVICE,
            ),
            (
                ops_service_pb2_grpc.add_OpsServiceServicer_to_server,
                OpsService(ctx.js, redriver),
                OPS_SERVICE,
            ),
        ],
    )
    await bundle.server.start()
    log.info("gateway listening on %s (port %d)", settings.gateway_addr, bundle.port)
    health = asyncio.create_task(follow_nats_health(ctx, bundle))
    sweeper = asyncio.create_task(JobSweeper(jobs, settings.jobs).run(ctx.stop))
    await ctx.stop.wait()
    await health  # NOT_SERVING now, while calls are still answered
    await sweeper
    await asyncio.sleep(settings.drain_s)
    await bundle.server.stop(grace=5)
    await search_channel.close()
    await blobs.close()
