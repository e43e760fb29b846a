"""A stand-in gateway that follows the BundleService and WebhookService contracts, for REST
tests.

The real gateway needs NATS, workers and a blob store; the transcoding tests only need
something that answers like it. This stub keeps jobs in memory and walks each one through
the states a user sees (QUEUED ... DONE) on a timer, so WatchJob replays the current state,
then every change, then a final message, as the contract says. It validates requests with
the contract's protovalidate rules, serves gRPC health and reflection, and can be told to
cut a user's watch streams midway (`cut_watches`) to show what a client sees then, or to
keep a user's jobs QUEUED until they are cancelled (`hold`). Like the
real public listener it authenticates callers with the project's interceptor and access table
(meshkit.auth, gateway.access) and serves no admin-plane service.

    stub = await start_stub_gateway(authenticator)
    ...  # gRPC on stub.address
    await stub.stop()
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import protovalidate
from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.gateway.v1 import bundle_service_pb2 as api
from contextmesh.gateway.v1 import bundle_service_pb2_grpc as api_grpc
from contextmesh.gateway.v1 import webhook_service_pb2 as hooks
from contextmesh.gateway.v1 import webhook_service_pb2_grpc as hooks_grpc
from contextmesh.job.v1 import job_pb2
from contextmesh.notify.v1 import callback_pb2
from contextmesh.schedule.v1 import schedule_pb2
from contextmesh.search.v1 import search_pb2
from google.api import httpbody_pb2
from google.protobuf import message as proto_message
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.access import PUBLIC_RULES
from meshkit.auth import Authenticator, AuthInterceptor, authorize_job
from meshkit.errors import JobNotFoundError
from meshkit.job_errors import end_with_error
from meshkit.validation import describe_violations

__all__ = [
    "DOWNLOAD_CHUNK_BYTES",
    "StubGateway",
    "StubState",
    "start_stub_gateway",
]

JobState = job_pb2.JobState
FINAL_STATES = frozenset(
    {JobState.JOB_STATE_DONE, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED}
)
# As the gateway: a refresh joins a job only while its bundle is not ready yet.
REFRESHING_STATES = frozenset(
    {
        JobState.JOB_STATE_QUEUED,
        JobState.JOB_STATE_DISCOVERING,
        JobState.JOB_STATE_SYNCING,
        JobState.JOB_STATE_MERGING,
    }
)
# Repositories every stub user owns, with the outcome each gets in a job.
REPOSITORIES = (
    (
        "context-engine",
        job_pb2.RepoStatus.REPO_STATUS_SYNCED,
        "Semantic search over GitHub repos in Python",
    ),
    ("dotfiles", job_pb2.RepoStatus.REPO_STATUS_UNCHANGED, "Shell and editor configuration"),
    ("rust-raytracer", job_pb2.RepoStatus.REPO_STATUS_FAILED, "A ray tracer written in Rust"),
)
DOWNLOAD_CHUNK_BYTES = 256
"""DownloadBundle sends the bundle in HttpBody messages of at most this many bytes."""
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _new_job_id() -> str:
    """A ULID-shaped id: 48 bits of milliseconds and 80 random bits, 26 Crockford chars."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


@dataclass
class _JobRecord:
    """A job and every state it went through; watchers read `history` from an index."""

    history: list[job_pb2.Job]
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None

    @property
    def job(self) -> job_pb2.Job:
        return self.history[-1]


@dataclass
class StubState:
    """What the stub knows: jobs and each user's latest bundle."""

    step_s: float
    jobs: dict[str, _JobRecord] = field(default_factory=dict)
    bundles: dict[str, tuple[api.GetBundleResponse, bytes]] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    schedules: dict[str, schedule_pb2.Schedule] = field(default_factory=dict)
    callbacks: dict[str, callback_pb2.Callback] = field(default_factory=dict)

    def cut_watches(self, user: str, *, after: int) -> None:
        """Abort WatchJob for `user`'s jobs with UNAVAILABLE after `after` messages."""
        self.cut_after[user] = after

    def hold(self, user: str) -> None:
        """Leave `user`'s new jobs QUEUED until they are cancelled."""
        self.held.add(user)

    async def publish(self, record: _JobRecord, job: job_pb2.Job) -> None:
        job.update_time.CopyFrom(_now())
        if job.state in FINAL_STATES:
            job.end_time.CopyFrom(job.update_time)
        async with record.changed:
            record.history.append(job)
            record.changed.notify_all()

    async def run(self, record: _JobRecord) -> None:
        """Walk a job through the lifecycle, one state change a step."""
        job = job_pb2.Job()
        job.CopyFrom(record.job)
        steps: list[tuple[job_pb2.JobState, dict[str, int]]] = [
            (JobState.JOB_STATE_DISCOVERING, {}),
            (JobState.JOB_STATE_SYNCING, {"total": len(REPOSITORIES)}),
            (JobState.JOB_STATE_SYNCING, {"synced": 1}),
            (JobState.JOB_STATE_SYNCING, {"unchanged": 1}),
            (JobState.JOB_STATE_SYNCING, {"failed": 1}),
            (JobState.JOB_STATE_MERGING, {}),
            (JobState.JOB_STATE_BUNDLE_READY, {}),
            (JobState.JOB_STATE_TRAINING, {}),
            (JobState.JOB_STATE_DONE, {}),
        ]
        for state, counts in steps:
            await asyncio.sleep(self.step_s)
            job = _copy(job)
            job.state = state
            for name, value in counts.items():
                setattr(job, name, value)
            if counts.get("failed"):
                job.failures.add(repository=f"{job.user}/{REPOSITORIES[2][0]}", reason="HTTP 404")
            if state == JobState.JOB_STATE_BUNDLE_READY:
                job.bundle.CopyFrom(self._store_bundle(job))
                job.bundle_ready_time.GetCurrentTime()
                job.training.state = job_pb2.TrainingState.TRAINING_STATE_QUEUED
            elif state == JobState.JOB_STATE_TRAINING:
                job.training.state = job_pb2.TrainingState.TRAINING_STATE_RUNNING
                job.training.total_steps = 19
                job.training.attempt = 1
            elif state == JobState.JOB_STATE_DONE:
                job.training.state = job_pb2.TrainingState.TRAINING_STATE_PUBLISHED
                job.training.step = 19
                job.training.base.mrr_at_10 = 0.851
                job.training.tuned.mrr_at_10 = 0.890
            await self.publish(record, job)

    def _store_bundle(self, job: job_pb2.Job) -> job_pb2.BundleRef:
        document = {
            "schema": "contextmesh.bundle/v1",
            "user": job.user,
            "repositories": [
                {"repository": f"{job.user}/{name}", "description": text, "readme": text * 8}
                for name, _, text in REPOSITORIES
            ],
        }
        data = json.dumps(document, sort_keys=True).encode()
        digest = hashlib.sha256(data).hexdigest()
        ref = job_pb2.BundleRef(
            content_hash=digest,
            blob_key=f"bundles/{job.user}/{digest}.json",
            repositories=len(REPOSITORIES),
            size_bytes=len(data),
        )
        summary = api.GetBundleResponse(
            user=job.user,
            bundle=ref,
            job_id=job.id,
            create_time=_now(),
            repositories=[
                bundle_pb2.RepoEntry(
                    repository=f"{job.user}/{name}",
                    fingerprint=hashlib.sha1(name.encode()).hexdigest(),
                    status=status,
                    reason="HTTP 404" if status == job_pb2.RepoStatus.REPO_STATUS_FAILED else "",
                )
                for name, status, _ in REPOSITORIES
            ],
            download_path=f"/v1/users/{job.user}/bundle:download",
        )
        self.bundles[job.user] = (summary, data)
        return ref


def _copy(job: job_pb2.Job) -> job_pb2.Job:
    out = job_pb2.Job()
    out.CopyFrom(job)
    return out


async def _validate(request: proto_message.Message, context: grpc.aio.ServicerContext) -> None:
    """Reject a request that breaks the contract's protovalidate rules, as the gateway does."""
    try:
        protovalidate.validate(request)
    except protovalidate.ValidationError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, describe_violations(exc))


class _BundleService(api_grpc.BundleServiceServicer):
    """BundleService over StubState."""

    def __init__(self, state: StubState) -> None:
        self.state = state

    async def _record(self, job_id: str, context: grpc.aio.ServicerContext) -> _JobRecord:
        record = self.state.jobs.get(job_id)
        try:
            if record is None:
                raise JobNotFoundError(job_id)
            # Someone else's job answers exactly like an unknown one.
            authorize_job(record.job.user, job_id)
        except JobNotFoundError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job {job_id} not found")
        assert record is not None
        return record

    async def _bundle(
        self, user: str, context: grpc.aio.ServicerContext
    ) -> tuple[api.GetBundleResponse, bytes]:
        found = self.state.bundles.get(user)
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"user {user} has no bundle yet")
        assert found is not None
        return found

    async def RefreshBundle(
        self, request: api.RefreshBundleRequest, context: grpc.aio.ServicerContext
    ) -> api.RefreshBundleResponse:
        await _validate(request, context)
        if not request.force:
            for record in self.state.jobs.values():
                if record.job.user == request.user and record.job.state in REFRESHING_STATES:
                    return api.RefreshBundleResponse(job=record.job, coalesced=True)
        job = job_pb2.Job(
            id=_new_job_id(),
            user=request.user,
            state=JobState.JOB_STATE_QUEUED,
            force=request.force,
            create_time=_now(),
        )
        job.update_time.CopyFrom(job.create_time)
        record = _JobRecord(history=[job])
        self.state.jobs[job.id] = record
        if request.user not in self.state.held:
            record.task = asyncio.create_task(self.state.run(record))
        return api.RefreshBundleResponse(
            job=job, status_url=f"/bundles/{job.user}/status?job_id={job.id}"
        )

    async def SetSchedule(
        self, request: api.SetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> api.SetScheduleResponse:
        await _validate(request, context)
        schedule = schedule_pb2.Schedule(user=request.user, interval=request.interval)
        schedule.next_run_time.CopyFrom(_now())
        schedule.next_run_time.seconds += request.interval.seconds
        self.state.schedules[request.user] = schedule
        return api.SetScheduleResponse(schedule=schedule)

    async def GetSchedule(
        self, request: api.GetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> api.GetScheduleResponse:
        await _validate(request, context)
        schedule = self.state.schedules.get(request.user)
        if schedule is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"user {request.user} has no schedule")
        return api.GetScheduleResponse(schedule=schedule)

    async def DeleteSchedule(
        self, request: api.DeleteScheduleRequest, context: grpc.aio.ServicerContext
    ) -> api.DeleteScheduleResponse:
        await _validate(request, context)
        self.state.schedules.pop(request.user, None)
        return api.DeleteScheduleResponse()

    async def SetCallback(
        self, request: api.SetCallbackRequest, context: grpc.aio.ServicerContext
    ) -> api.SetCallbackResponse:
        await _validate(request, context)
        callback = callback_pb2.Callback(user=request.user, url=request.url)
        callback.update_time.CopyFrom(_now())
        self.state.callbacks[request.user] = callback
        return api.SetCallbackResponse(callback=callback, secret="0" * 64)

    async def GetCallback(
        self, request: api.GetCallbackRequest, context: grpc.aio.ServicerContext
    ) -> api.GetCallbackResponse:
        await _validate(request, context)
        callback = self.state.callbacks.get(request.user)
        if callback is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"user {request.user} has no callback")
        return api.GetCallbackResponse(callback=callback)

    async def DeleteCallback(
        self, request: api.DeleteCallbackRequest, context: grpc.aio.ServicerContext
    ) -> api.DeleteCallbackResponse:
        await _validate(request, context)
        self.state.callbacks.pop(request.user, None)
        return api.DeleteCallbackResponse()

    async def ListJobs(
        self, request: api.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> api.ListJobsResponse:
        """One page holding all of the user's jobs, newest first (the stub keeps few)."""
        await _validate(request, context)
        jobs = [r.job for r in self.state.jobs.values() if r.job.user == request.user]
        return api.ListJobsResponse(jobs=sorted(jobs, key=lambda job: job.id, reverse=True))

    async def GetRefreshStatus(
        self, request: api.GetRefreshStatusRequest, context: grpc.aio.ServicerContext
    ) -> api.GetRefreshStatusResponse:
        await _validate(request, context)
        job = (await self._record(request.job_id, context)).job
        if job.user != request.user:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.job_id} not found")
        done = job.synced + job.unchanged + job.failed
        return api.GetRefreshStatusResponse(job=job, progress=f"{done} of {job.total}")

    async def GetJob(
        self, request: api.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> api.GetJobResponse:
        await _validate(request, context)
        return api.GetJobResponse(job=(await self._record(request.id, context)).job)

    async def WatchJob(
        self, request: api.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[api.WatchJobResponse]:
        await _validate(request, context)
        record = await self._record(request.id, context)
        cut_after = self.state.cut_after.get(record.job.user)
        index, sent = len(record.history) - 1, 0
        while True:
            async with record.changed:
                while index >= len(record.history):
                    await record.changed.wait()
                job = record.history[index]
            final = job.state in FINAL_STATES
            yield api.WatchJobResponse(
                job=job, final=final, bundle_ready=job.HasField("bundle_ready_time")
            )
            sent += 1
            if final:
                return
            if cut_after is not None and sent >= cut_after:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "stub: watch stream cut")
            index += 1

    async def GetBundle(
        self, request: api.GetBundleRequest, context: grpc.aio.ServicerContext
    ) -> api.GetBundleResponse:
        await _validate(request, context)
        summary, _ = await self._bundle(request.user, context)
        return summary

    async def DownloadBundle(
        self, request: api.DownloadBundleRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        await _validate(request, context)
        _, data = await self._bundle(request.user, context)
        for offset in range(0, len(data), DOWNLOAD_CHUNK_BYTES):
            # Envoy takes the response's Content-Type from the first message.
            yield httpbody_pb2.HttpBody(
                content_type="application/json" if offset == 0 else "",
                data=data[offset : offset + DOWNLOAD_CHUNK_BYTES],
            )

    async def CancelJob(
        self, request: api.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> api.CancelJobResponse:
        await _validate(request, context)
        record = await self._record(request.id, context)
        if record.job.state in FINAL_STATES:
            return api.CancelJobResponse(job=record.job)
        if record.task is not None:
            record.task.cancel()
        job = _copy(record.job)
        end_with_error(
            job,
            JobState.JOB_STATE_CANCELLED,
            "cancelled by a caller",
            code=job_pb2.ERROR_CODE_CANCELLED,
        )
        await self.state.publish(record, job)
        return api.CancelJobResponse(job=job)

    async def SearchBundle(
        self, request: api.SearchBundleRequest, context: grpc.aio.ServicerContext
    ) -> api.SearchBundleResponse:
        await _validate(request, context)
        summary, data = await self._bundle(request.user, context)
        words = set(request.query.lower().split())
        repositories = json.loads(data)["repositories"]
        hits = sorted(
            (
                search_pb2.SearchHit(
                    repository=repo["repository"],
                    score=len(words & set(repo["description"].lower().split())) / (len(words) or 1),
                    passage=repo["description"],
                    passage_source="description",
                )
                for repo in repositories
            ),
            key=lambda hit: (-hit.score, hit.repository),
        )
        return api.SearchBundleResponse(
            hits=hits[: request.top_k or 10],
            bundle_hash=summary.bundle.content_hash,
            tuned=True,
        )


class _WebhookService(hooks_grpc.WebhookServiceServicer):
    """Answers a ping with PONG and ignores the rest, saying in `message` (JSON) what reached
    it: the event, delivery and signature headers, the body's length, SHA-256 and content
    type, so tests can tell that Envoy passed the delivery on untouched."""

    async def ReceiveGithubWebhook(
        self, request: hooks.ReceiveGithubWebhookRequest, context: grpc.aio.ServicerContext
    ) -> hooks.ReceiveGithubWebhookResponse:
        headers = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        event = headers.get("x-github-event", "")
        seen = {
            "event": event,
            "delivery": headers.get("x-github-delivery", ""),
            "signature": headers.get("x-hub-signature-256", ""),
            "bytes": len(request.body.data),
            "sha256": hashlib.sha256(request.body.data).hexdigest(),
            "contentType": request.body.content_type,
        }
        outcome = hooks.WEBHOOK_OUTCOME_PONG if event == "ping" else hooks.WEBHOOK_OUTCOME_IGNORED
        return hooks.ReceiveGithubWebhookResponse(outcome=outcome, message=json.dumps(seen))


@dataclass
class StubGateway:
    """A running stub: where it listens, its state, and stop()."""

    server: grpc.aio.Server
    port: int
    state: StubState

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        for record in self.state.jobs.values():
            if record.task is not None:
                record.task.cancel()
        await self.server.stop(grace=None)


async def start_stub_gateway(
    authenticator: Authenticator, *, host: str = "127.0.0.1", step_s: float = 0.01
) -> StubGateway:
    """Start the stub on a free port; each job changes state every `step_s` seconds."""
    state = StubState(step_s=step_s)
    server = grpc.aio.server(interceptors=[AuthInterceptor(authenticator, PUBLIC_RULES)])
    api_grpc.add_BundleServiceServicer_to_server(_BundleService(state), server)
    hooks_grpc.add_WebhookServiceServicer_to_server(_WebhookService(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = [
        api.DESCRIPTOR.services_by_name["BundleService"].full_name,
        hooks.DESCRIPTOR.services_by_name["WebhookService"].full_name,
    ]
    for name in ["", *services]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [
            *services,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    return StubGateway(server=server, port=port, state=state)
