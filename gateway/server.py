"""The gateway process: BundleService on the public listener, OpsService on the admin one.

It never calls GitHub and never loads a model: refreshes are KV writes plus one publish,
progress is a watch of the job record, search is forwarded to the search service. Operations
(dead letters) live on a separate admin listener (CONTEXTMESH_ADMIN_ADDR, loopback by
default) that only admin-scoped tokens may use; the public listener does not serve them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

import grpc
from contextmesh.gateway.v1 import bundle_service_pb2_grpc, webhook_service_pb2_grpc
from contextmesh.ops.v1 import ops_service_pb2_grpc
from contextmesh.search.v1 import search_service_pb2_grpc
from nats.aio.client import Client
from nats.js import JetStreamContext

from gateway.access import (
    ADMIN_RULES,
    BUNDLE_SERVICE,
    OPS_SERVICE,
    PUBLIC_RULES,
    WEBHOOK_SERVICE,
)
from gateway.bundle_service import BundleService
from gateway.bundles import BundleReader
from gateway.forget import Forgetter
from gateway.github_events import MAX_BODY_BYTES
from gateway.history import JobHistory
from gateway.limits import EdgeLimits
from gateway.ops_service import OpsService
from gateway.pending import PendingRefreshes
from gateway.redrive import Redriver
from gateway.refresh import Refresher
from gateway.retention import RetentionSweep
from gateway.scheduler import Scheduler
from gateway.schedules import ScheduleStore
from gateway.sweeper import JobSweeper
from gateway.webhook_service import WebhookService
from meshkit.auth import Authenticator
from meshkit.blob import open_blob_store
from meshkit.capacity import CapacityWatch
from meshkit.domain.callbacks import CallbackStore
from meshkit.jobs import JobStore
from meshkit.nats_auth import OPS
from meshkit.nats_client import connect
from meshkit.rpc import create_server
from meshkit.service import ServiceContext, follow_nats_health
from meshkit.telemetry import aio_client_interceptors
from meshkit.topology import Buckets

__all__ = ["serve"]

log = logging.getLogger(__name__)


async def _ops_connection(ctx: ServiceContext) -> tuple[Client | None, JetStreamContext]:
    """OpsService's own NATS identity when one is configured: only it may read and delete
    dead letters and start the jobs that redrive them (a train task's job publishes TRAIN);
    the gateway's identity starts discovery only."""
    seed = ctx.settings.nats.ops_nkey_seed_file
    if not seed:
        return None, ctx.js
    ops = dataclasses.replace(ctx.settings.nats, nkey_seed_file=seed, user=OPS)
    return await connect(ops, name=f"{ctx.name}-ops")


async def serve(ctx: ServiceContext) -> None:
    settings = ctx.settings
    auth = Authenticator.from_settings(settings.auth)
    ops_nc, ops_js = await _ops_connection(ctx)
    jobs = await JobStore.open(ctx.js)
    pointers = await ctx.js.key_value(Buckets.BUNDLES.name)
    blobs = open_blob_store(settings.blob_url)
    search_channel = grpc.aio.insecure_channel(
        settings.search_addr, interceptors=aio_client_interceptors()
    )
    refresher = await Refresher.open(ctx.js, jobs)
    schedules = await ScheduleStore.open(ctx.js)
    redriver = await Redriver.open(ops_js)
    forgetter = await Forgetter.open(
        ops_js, JobHistory(ops_js, await ops_js.key_value(Buckets.HISTORY.name), jobs), blobs
    )
    pending = await PendingRefreshes.open(ctx.js, refresher, settings.webhooks)
    bundle_service = BundleService(
        refresher,
        jobs,
        BundleReader(pointers, blobs),
        search_service_pb2_grpc.SearchServiceStub(search_channel),
        schedules,
        await CallbackStore.open(ctx.js),
        limits=EdgeLimits(settings.limits),
    )
    public = create_server(
        settings.gateway_addr,
        [
            (
                bundle_service_pb2_grpc.add_BundleServiceServicer_to_server,
                bundle_service,
                BUNDLE_SERVICE,
            ),
            (
                webhook_service_pb2_grpc.add_WebhookServiceServicer_to_server,
                WebhookService(settings.webhooks.github_secret, pending),
                WEBHOOK_SERVICE,
            ),
        ],
        auth=auth,
        rules=PUBLIC_RULES,
        # A webhook's body is the one request that is not a few names (Envoy's webhook
        # route passes up to twice MAX_BODY_BYTES, so the handler can say what is wrong).
        max_receive_bytes=2 * MAX_BODY_BYTES + 4096,
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    admin = create_server(
        settings.admin_addr,
        [
            (
                ops_service_pb2_grpc.add_OpsServiceServicer_to_server,
                OpsService(
                    ops_js, redriver, forgetter, RetentionSweep(ops_js, blobs, settings.retention)
                ),
                OPS_SERVICE,
            ),
        ],
        auth=auth,
        rules=ADMIN_RULES,
        max_concurrent_rpcs=64,
    )
    await public.server.start()
    await admin.server.start()
    log.info("gateway listening on %s (port %d)", settings.gateway_addr, public.port)
    log.info("gateway admin listening on %s (port %d)", settings.admin_addr, admin.port)
    health = asyncio.gather(follow_nats_health(ctx, public), follow_nats_health(ctx, admin))
    sweeper = asyncio.create_task(JobSweeper(jobs, settings.jobs).run(ctx.stop))
    scheduler = asyncio.create_task(Scheduler(schedules, refresher).run(ctx.stop))
    webhooks = asyncio.create_task(pending.run(ctx.stop))
    # The ops identity's streams (DEADLETTER above all) are watched on its own connection.
    ops_capacity = (
        asyncio.create_task(CapacityWatch.for_identity(ops_js, settings.nats, OPS).run(ctx.stop))
        if ops_nc is not None
        else None
    )
    await ctx.stop.wait()
    await health  # NOT_SERVING now, while calls are still answered
    await sweeper
    await scheduler
    await webhooks
    if ops_capacity is not None:
        await ops_capacity
    await asyncio.sleep(settings.drain_s)
    await asyncio.gather(public.server.stop(grace=5), admin.server.stop(grace=5))
    await search_channel.close()
    await blobs.close()
    if ops_nc is not None:
        with contextlib.suppress(Exception):
            await ops_nc.drain()
