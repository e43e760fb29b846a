"""The gateway process: BundleService and OpsService on one gRPC server.

It never calls GitHub and never loads a model: refreshes are KV writes plus one publish,
progress is a watch of the job record, search is forwarded to the search service.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

import grpc
from contextmesh.gateway.v1 import bundle_service_pb2, bundle_service_pb2_grpc
from contextmesh.ops.v1 import ops_service_pb2, ops_service_pb2_grpc
from contextmesh.search.v1 import search_service_pb2_grpc
from nats.aio.client import Client
from nats.js import JetStreamContext

from gateway.bundle_service import BundleService
from gateway.bundles import BundleReader
from gateway.ops_service import OpsService
from gateway.refresh import Refresher
from meshkit.blob import open_blob_store
from meshkit.jobs import JobStore
from meshkit.nats_auth import OPS
from meshkit.nats_client import connect
from meshkit.rpc import create_server
from meshkit.service import ServiceContext, follow_nats_health
from meshkit.topology import Buckets

__all__ = ["serve"]

log = logging.getLogger(__name__)

BUNDLE_SERVICE = bundle_service_pb2.DESCRIPTOR.services_by_name["BundleService"].full_name
OPS_SERVICE = ops_service_pb2.DESCRIPTOR.services_by_name["OpsService"].full_name


async def _ops_connection(ctx: ServiceContext) -> tuple[Client | None, JetStreamContext]:
    """OpsService's own NATS identity when one is configured: only it may re-publish a
    dead letter to any work stream and delete it; the gateway's identity starts discovery only."""
    seed = ctx.settings.nats.ops_nkey_seed_file
    if not seed:
        return None, ctx.js
    ops = dataclasses.replace(ctx.settings.nats, nkey_seed_file=seed, user=OPS)
    return await connect(ops, name=f"{ctx.name}-ops")


async def serve(ctx: ServiceContext) -> None:
    settings = ctx.settings
    ops_nc, ops_js = await _ops_connection(ctx)
    jobs = await JobStore.open(ctx.js)
    active = await ctx.js.key_value(Buckets.ACTIVE.name)
    pointers = await ctx.js.key_value(Buckets.BUNDLES.name)
    blobs = open_blob_store(settings.blob_url)
    search_channel = grpc.aio.insecure_channel(settings.search_addr)
    bundle_service = BundleService(
        Refresher(ctx.js, jobs, active),
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
                OpsService(ops_js),
                OPS_SERVICE,
            ),
        ],
    )
    await bundle.server.start()
    log.info("gateway listening on %s (port %d)", settings.gateway_addr, bundle.port)
    health = asyncio.create_task(follow_nats_health(ctx, bundle))
    await ctx.stop.wait()
    await health  # NOT_SERVING now, while calls are still answered
    await asyncio.sleep(settings.drain_s)
    await bundle.server.stop(grace=5)
    await search_channel.close()
    await blobs.close()
    if ops_nc is not None:
        with contextlib.suppress(Exception):
            await ops_nc.drain()
