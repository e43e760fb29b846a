"""The gateway's per-caller limits over gRPC, in-process against a real nats-server.

BundleService runs behind the project's interceptors (authentication, access rules, error
mapping) with callers holding real tokens; the limits run on a clock the test moves, and
the KV watches behind WatchJob are counted on the server (the KV_cm_jobs stream's consumers).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.search.v1 import search_service_pb2_grpc
from nats.js import JetStreamContext

from gateway.access import BUNDLE_SERVICE, PUBLIC_RULES
from gateway.bundle_service import BundleService
from gateway.bundles import BundleReader
from gateway.limits import EdgeLimits
from meshkit.auth import Principal, _Call, _current
from meshkit.bearer import bearer_metadata
from meshkit.blob import open_blob_store
from meshkit.config import LimitSettings
from meshkit.jobs import WATCH_INACTIVE_S
from meshkit.rpc import ServerBundle, create_server
from meshkit.signing import LocalSigner
from meshkit.topology import Buckets
from tests.gateway.conftest import Gateway
from tests.support.auth import authenticator_for
from tests.support.polling import until

Code = grpc.StatusCode
JOBS_STREAM = f"KV_{Buckets.JOBS.name}"
LIMITS = LimitSettings(
    refresh_rate=1.0,
    refresh_burst=3,
    force_rate=0.1,
    force_burst=1,
    watches_per_job=2,
    watches_per_caller=3,
)


class Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Served:
    gateway: Gateway
    server: ServerBundle
    clock: Clock
    signer: LocalSigner
    channel: grpc.aio.Channel
    limits: EdgeLimits

    def stub(self) -> bundle_service_pb2_grpc.BundleServiceStub:
        return bundle_service_pb2_grpc.BundleServiceStub(self.channel)

    def token(self, subject: str, *users: str, admin: bool = False) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self.signer.mint(users=list(users), admin=admin, subject=subject))

    async def refresh(
        self, caller: tuple[tuple[str, str], ...], user: str, *, force: bool = False
    ) -> pb.RefreshBundleResponse:
        answer: pb.RefreshBundleResponse = await self.stub().RefreshBundle(
            pb.RefreshBundleRequest(user=user, force=force), metadata=caller, timeout=10
        )
        return answer


@pytest.fixture
async def served(gateway: Gateway, signer: LocalSigner, tmp_path: Path) -> AsyncIterator[Served]:
    clock = Clock()
    limits = EdgeLimits(LIMITS, clock=clock)
    blobs = open_blob_store((tmp_path / "blobs").as_uri())
    nowhere = grpc.aio.insecure_channel("127.0.0.1:9")  # search is never called here
    service = BundleService(
        gateway.refresher,
        gateway.jobs,
        BundleReader(await gateway.js.key_value(Buckets.BUNDLES.name), blobs),
        search_service_pb2_grpc.SearchServiceStub(nowhere),
        gateway.schedules,
        gateway.callbacks,
        limits=limits,
    )
    server = create_server(
        "127.0.0.1:0",
        [(bundle_service_pb2_grpc.add_BundleServiceServicer_to_server, service, BUNDLE_SERVICE)],
        auth=authenticator_for(signer),
        rules=PUBLIC_RULES,
    )
    await server.server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Served(gateway, server, clock, signer, channel, limits)
    finally:
        await channel.close()
        await server.server.stop(grace=None)
        await nowhere.close()
        await blobs.close()


def random_user() -> str:
    return f"x{uuid.uuid4().hex[:12]}"


async def refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def consumers(js: JetStreamContext) -> int:
    return (await js.stream_info(JOBS_STREAM)).state.consumer_count


async def test_a_flood_from_one_caller_is_limited_while_another_is_not(served: Served) -> None:
    flooder = served.token("flooder", "*", admin=True)  # may act for anyone, as in the probe
    bob = served.token("bob", "bob")
    for _ in range(LIMITS.refresh_burst):
        await served.refresh(flooder, random_user())
    jobs_before = (await served.gateway.js.stream_info(JOBS_STREAM)).state.messages

    name = random_user()
    err = await refused(served.refresh(flooder, name))
    assert err.code() == Code.RESOURCE_EXHAUSTED
    assert "too many refreshes from this caller" in (err.details() or "")
    assert "retry in 1 s" in (err.details() or "")
    assert dict(err.trailing_metadata() or ())["retry-after"] == "1"
    # Refused before any KV write: no job record, no cm_active entry for the name.
    assert (await served.gateway.js.stream_info(JOBS_STREAM)).state.messages == jobs_before
    active = await served.gateway.js.key_value(Buckets.ACTIVE.name)
    assert name not in (await active.keys())

    # Another caller is unaffected.
    assert (await served.refresh(bob, "bob")).job.user == "bob"

    # The bucket refills with time: one more refresh per second.
    served.clock.advance(0.5)
    err = await refused(served.refresh(flooder, random_user()))
    assert "retry in 0.5 s" in (err.details() or "")
    served.clock.advance(0.5)
    await served.refresh(flooder, random_user())
    assert (await refused(served.refresh(flooder, random_user()))).code() == Code.RESOURCE_EXHAUSTED


async def test_force_has_its_own_lower_limit(served: Served) -> None:
    alice = served.token("alice", "alice")
    await served.refresh(alice, "alice", force=True)
    err = await refused(served.refresh(alice, "alice", force=True))
    assert err.code() == Code.RESOURCE_EXHAUSTED
    assert "too many forced refreshes" in (err.details() or "")
    assert "one every 10 s" in (err.details() or "") and "retry in 10 s" in (err.details() or "")
    assert dict(err.trailing_metadata() or ())["retry-after"] == "10"
    # A plain refresh still goes through (it coalesces onto the forced job), and the refused
    # force took nothing from the refresh bucket: one forced + one plain, one token left.
    assert (await served.refresh(alice, "alice")).coalesced
    await served.refresh(alice, "alice")
    assert (await refused(served.refresh(alice, "alice"))).code() == Code.RESOURCE_EXHAUSTED

    served.clock.advance(10)
    assert (await served.refresh(alice, "alice", force=True)).job.force


async def test_watches_are_capped_per_job_and_leave_no_consumer_behind(served: Served) -> None:
    alice = served.token("alice", "alice")
    job = (await served.refresh(alice, "alice")).job
    js = served.gateway.js
    baseline = await consumers(js)

    streams = [
        served.stub().WatchJob(pb.WatchJobRequest(id=job.id), metadata=alice)
        for _ in range(LIMITS.watches_per_job)
    ]
    for stream in streams:
        assert (await stream.read()).job.id == job.id
    await until(lambda: _equals(consumers(js), baseline + len(streams)), 5)

    extra = served.stub().WatchJob(pb.WatchJobRequest(id=job.id), metadata=alice)
    err = await refused(extra.read())
    assert err.code() == Code.RESOURCE_EXHAUSTED
    assert f"job {job.id} already has {LIMITS.watches_per_job} open watches" in (
        err.details() or ""
    )

    for stream in streams:
        stream.cancel()
    # Removed at once, not by the server's inactivity threshold.
    await until(lambda: _equals(consumers(js), baseline), WATCH_INACTIVE_S / 3)

    # The slots are free again.
    again = served.stub().WatchJob(pb.WatchJobRequest(id=job.id), metadata=alice)
    assert (await again.read()).job.id == job.id
    again.cancel()
    await until(lambda: _equals(consumers(js), baseline), WATCH_INACTIVE_S / 3)


async def test_watches_cancelled_at_any_moment_give_back_their_slot_and_consumer(
    served: Served,
) -> None:
    """Clients that go away at every point of a watch (before the first message, right after
    it, while updates flow) leave no slot taken and no consumer on the server."""
    alice = served.token("alice", "alice")
    job = (await served.refresh(alice, "alice")).job
    js = served.gateway.js
    baseline = await consumers(js)

    async def bump(rounds: int) -> None:
        for i in range(rounds):
            await served.gateway.jobs.update(job.id, _progressed(i))
            await asyncio.sleep(0.002)

    updates = asyncio.create_task(bump(400))
    for i in range(60):
        stream = served.stub().WatchJob(pb.WatchJobRequest(id=job.id), metadata=alice)
        if i % 3:
            await stream.read()
        if i % 3 == 2:
            await stream.read()
        stream.cancel()
        await asyncio.sleep(0.001 * (i % 5))
    await updates

    async def clean() -> bool:
        return not served.limits.watches.jobs and await consumers(js) == baseline

    await until(clean, WATCH_INACTIVE_S / 3)
    assert not served.limits.watches.callers


def _progressed(step: int):  # type: ignore[no-untyped-def]
    def mutate(record: job_record_pb2.JobRecord) -> bool:
        record.job.synced = step + 1
        return True

    return mutate


class AbandonedCall:
    """A servicer context whose call ends while its handler's generator is left suspended,
    as grpc can leave it when a client goes away during a send."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[object], None]] = []

    def add_done_callback(self, callback: Callable[[object], None]) -> None:
        self.callbacks.append(callback)

    def end(self) -> None:
        for callback in self.callbacks:
            callback(self)


async def test_a_watch_left_suspended_is_cleaned_up_when_its_call_ends(
    served: Served, tmp_path: Path
) -> None:
    alice = served.token("alice", "alice")
    job = (await served.refresh(alice, "alice")).job
    js = served.gateway.js
    baseline = await consumers(js)
    service = BundleService(
        served.gateway.refresher,
        served.gateway.jobs,
        BundleReader(await js.key_value(Buckets.BUNDLES.name), open_blob_store(tmp_path.as_uri())),
        search_service_pb2_grpc.SearchServiceStub(served.channel),
        served.gateway.schedules,
        served.gateway.callbacks,
        limits=served.limits,
    )
    call = AbandonedCall()
    # As the auth interceptor leaves it for a call by alice.
    _current.set(_Call(Principal("alice", frozenset({"alice"}))))
    stream = service.WatchJob(pb.WatchJobRequest(id=job.id), call)  # type: ignore[arg-type]
    assert (await anext(stream)).job.id == job.id
    await served.gateway.jobs.update(job.id, _progressed(0))
    assert (await anext(stream)).job.synced == 1  # the KV watch is open now
    assert await consumers(js) == baseline + 1 and served.limits.watches.jobs[job.id] == 1

    call.end()  # the generator stays suspended at its yield, never closed by its caller
    assert not served.limits.watches.jobs and not served.limits.watches.callers
    await until(lambda: _equals(consumers(js), baseline), WATCH_INACTIVE_S / 3)
    del stream


async def test_watches_are_capped_per_caller(served: Served) -> None:
    admin = served.token("dashboard", "*", admin=True)
    users = [random_user() for _ in range(LIMITS.watches_per_caller + 1)]
    jobs = [(await served.refresh(served.token(u, u), u)).job for u in users]
    streams = [
        served.stub().WatchJob(pb.WatchJobRequest(id=j.id), metadata=admin)
        for j in jobs[: LIMITS.watches_per_caller]
    ]
    for stream in streams:
        await stream.read()

    err = await refused(
        served.stub().WatchJob(pb.WatchJobRequest(id=jobs[-1].id), metadata=admin).read()
    )
    assert err.code() == Code.RESOURCE_EXHAUSTED
    assert f"this caller already has {LIMITS.watches_per_caller} open watches" in (
        err.details() or ""
    )
    # The job's owner may still watch it: the cap is the dashboard's, not the job's.
    owner = served.token(users[-1], users[-1])
    mine = served.stub().WatchJob(pb.WatchJobRequest(id=jobs[-1].id), metadata=owner)
    assert (await mine.read()).job.id == jobs[-1].id
    for stream in [*streams, mine]:
        stream.cancel()


async def test_a_watch_that_ends_with_its_job_or_its_gateway_leaves_no_consumer(
    served: Served,
) -> None:
    alice = served.token("alice", "alice")
    js = served.gateway.js
    baseline = await consumers(js)
    ending = (await served.refresh(alice, "alice")).job
    watch = served.stub().WatchJob(pb.WatchJobRequest(id=ending.id), metadata=alice)
    await watch.read()
    await until(lambda: _equals(consumers(js), baseline + 1), 5)
    await served.gateway.jobs.end(
        ending.id, job_pb2.JOB_STATE_FAILED, "ended by the test", code=job_pb2.ERROR_CODE_STALLED
    )
    while (message := await watch.read()) is not grpc.aio.EOF:
        last = message
    assert last.final and last.job.state == job_pb2.JOB_STATE_FAILED
    await until(lambda: _equals(consumers(js), baseline), WATCH_INACTIVE_S / 3)

    # The server's own clean-up for a gateway that dies without stopping its watches.
    running = (await served.refresh(alice, "alice", force=True)).job
    watch = served.stub().WatchJob(pb.WatchJobRequest(id=running.id), metadata=alice)
    await watch.read()
    await until(lambda: _equals(consumers(js), baseline + 1), 5)
    # The watch's ordered consumer, beside the durable one notifysvc follows the jobs with.
    infos = [c for c in await js.consumers_info(JOBS_STREAM) if not c.config.durable_name]
    assert [c.config.inactive_threshold for c in infos] == [WATCH_INACTIVE_S]

    # The gateway stops: open watches end and their consumers go.
    await served.server.server.stop(grace=None)
    await until(lambda: _equals(consumers(js), baseline), WATCH_INACTIVE_S / 3)


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
