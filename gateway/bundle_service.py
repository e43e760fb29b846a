"""contextmesh.gateway.v1.BundleService: the public API.

Requests arrive already authenticated and checked against the caller's users
(gateway.access, meshkit.auth), validated (meshkit.rpc.GuardInterceptor), and domain errors
are mapped to statuses in one place (meshkit.rpc.STATUS_OF); handlers here only do the work.
The job methods check the job's owner on the record they read (`authorize_job`), so someone
else's job answers exactly like an unknown one. Refreshes and open watches are limited per
caller (gateway.limits) before anything is written or watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import grpc
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2
from contextmesh.search.v1 import search_service_pb2, search_service_pb2_grpc
from google.api import httpbody_pb2

from gateway.bundles import BundleReader
from gateway.limits import EdgeLimits
from gateway.refresh import Refresher
from gateway.schedules import ScheduleStore
from meshkit.auth import authorize_job, current_principal, forward_credentials
from meshkit.config import LimitSettings
from meshkit.domain.callbacks import CallbackNotFoundError, CallbackStore
from meshkit.erasure import purge
from meshkit.errors import JobNotFoundError
from meshkit.jobs import JobStore, bundle_is_ready, is_final
from meshkit.topology import Buckets

__all__ = ["BundleService"]

JobState = job_pb2.JobState


def _nothing() -> None:
    pass


async def _close(updates: AsyncGenerator[job_pb2.Job, None]) -> None:
    """Close a watch unless it is running (then it is closing on its own)."""
    with contextlib.suppress(RuntimeError):
        await updates.aclose()


def _progress(job: job_pb2.Job) -> pb.WatchJobResponse:
    return pb.WatchJobResponse(
        job=job, final=is_final(job.state), bundle_ready=bundle_is_ready(job)
    )


class BundleService(bundle_service_pb2_grpc.BundleServiceServicer):
    def __init__(
        self,
        refresher: Refresher,
        jobs: JobStore,
        bundles: BundleReader,
        search: search_service_pb2_grpc.SearchServiceStub,
        schedules: ScheduleStore,
        callbacks: CallbackStore,
        *,
        search_timeout_s: float = 10.0,
        limits: EdgeLimits | None = None,
    ) -> None:
        self.limits = limits or EdgeLimits(LimitSettings())
        self._closing: set[asyncio.Task[None]] = set()
        self.refresher = refresher
        self.jobs = jobs
        self.bundles = bundles
        self.search = search
        self.schedules = schedules
        self.callbacks = callbacks
        self.search_timeout_s = search_timeout_s

    async def RefreshBundle(
        self, request: pb.RefreshBundleRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefreshBundleResponse:
        self.limits.admit_refresh(current_principal().subject, force=request.force)
        job, coalesced = await self.refresher.refresh(request.user, force=request.force)
        return pb.RefreshBundleResponse(
            job=job, coalesced=coalesced, status_url=f"/bundles/{job.user}/status?job_id={job.id}"
        )

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsResponse:
        jobs, next_page_token = await self.refresher.history.page(
            request.user, request.page_size, request.page_token
        )
        return pb.ListJobsResponse(jobs=jobs, next_page_token=next_page_token)

    async def GetRefreshStatus(
        self, request: pb.GetRefreshStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRefreshStatusResponse:
        record, _ = await self.jobs.get(request.job_id)
        job = record.job
        if job.user != request.user:
            # Another user's job answers exactly like an unknown one.
            raise JobNotFoundError(request.job_id)
        done = job.synced + job.unchanged + job.failed
        return pb.GetRefreshStatusResponse(job=job, progress=f"{done} of {job.total}")

    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetJobResponse:
        record, _ = await self.jobs.get(request.id)
        authorize_job(record.job.user, request.id)
        return pb.GetJobResponse(job=record.job)

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchJobResponse]:
        # The KV watch behind the stream and the watch's slots are given back however the
        # stream ends (the client cancels, the job ends, the gateway stops): by the generator
        # closing, and, should grpc leave it suspended, by the call's done callback.
        updates = self.jobs.watch(request.id)
        release: Callable[[], None] = _nothing
        loop = asyncio.get_running_loop()

        def ended(_: object) -> None:
            release()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to close
                loop.call_soon_threadsafe(self._close_soon, updates)

        context.add_done_callback(ended)
        async with contextlib.aclosing(updates):
            job = await anext(updates)  # the current state, read before anything is watched
            authorize_job(job.user, request.id)
            release = self.limits.watches.take(request.id, current_principal().subject)
            try:
                yield _progress(job)
                async for job in updates:
                    yield _progress(job)
            finally:
                release()

    def _close_soon(self, updates: AsyncGenerator[job_pb2.Job, None]) -> None:
        task = asyncio.ensure_future(_close(updates))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def GetBundle(
        self, request: pb.GetBundleRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBundleResponse:
        pointer = await self.bundles.pointer(request.user)
        index = await self.bundles.index(pointer)
        return pb.GetBundleResponse(
            user=request.user,
            bundle=pointer.bundle,
            job_id=pointer.job_id,
            create_time=pointer.create_time,
            repositories=index.repositories,
            download_path=f"/v1/users/{request.user}/bundle:download",
        )

    async def DownloadBundle(
        self, request: pb.DownloadBundleRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        pointer = await self.bundles.pointer(request.user)
        first = True
        async for chunk in self.bundles.content(pointer):
            # Envoy takes the content type from the first message of the stream.
            yield httpbody_pb2.HttpBody(
                content_type="application/json" if first else "", data=chunk
            )
            first = False

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelJobResponse:
        current, _ = await self.jobs.get(request.id)
        authorize_job(current.job.user, request.id)
        record = await self.jobs.end(
            request.id,
            JobState.JOB_STATE_CANCELLED,
            "cancelled by a caller",
            code=job_pb2.ERROR_CODE_CANCELLED,
        )
        assert record is not None  # an unknown id raised JobNotFoundError
        return pb.CancelJobResponse(job=record.job)

    async def SetSchedule(
        self, request: pb.SetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetScheduleResponse:
        schedule = await self.schedules.set(request.user, request.interval, time.time())
        await self.refresher.fence.check(
            request.user, lambda: purge(self.refresher.js, Buckets.SCHEDULES, request.user)
        )
        return pb.SetScheduleResponse(schedule=schedule)

    async def GetSchedule(
        self, request: pb.GetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetScheduleResponse:
        schedule, _ = await self.schedules.get(request.user)
        return pb.GetScheduleResponse(schedule=schedule)

    async def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteScheduleResponse:
        await self.schedules.delete(request.user)
        return pb.DeleteScheduleResponse()

    async def SetCallback(
        self, request: pb.SetCallbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetCallbackResponse:
        stored = await self.callbacks.set(request.user, request.url)
        await self.refresher.fence.check(
            request.user, lambda: purge(self.refresher.js, Buckets.CALLBACKS, request.user)
        )
        return pb.SetCallbackResponse(callback=stored.callback, secret=stored.secret)

    async def GetCallback(
        self, request: pb.GetCallbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCallbackResponse:
        stored = await self.callbacks.get(request.user)
        if stored is None:
            raise CallbackNotFoundError(request.user)
        return pb.GetCallbackResponse(callback=stored.callback)

    async def DeleteCallback(
        self, request: pb.DeleteCallbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCallbackResponse:
        await self.callbacks.delete(request.user)
        return pb.DeleteCallbackResponse()

    async def SearchBundle(
        self, request: pb.SearchBundleRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchBundleResponse:
        try:
            answer = await self.search.Search(
                search_service_pb2.SearchRequest(
                    user=request.user, query=request.query, top_k=request.top_k
                ),
                timeout=self.search_timeout_s,
                # searchsvc verifies the caller's token too: it acts for the same caller.
                metadata=forward_credentials(context),
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                await context.abort(code, "the search service is unavailable; try again shortly")
            await context.abort(code, exc.details() or "search failed")
        return pb.SearchBundleResponse(
            hits=answer.hits, bundle_hash=answer.bundle_hash, tuned=answer.tuned
        )
