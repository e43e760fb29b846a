"""A refresh from the gateway through discovery, sync and merge, in-process: the handlers are
called on the tasks the gateway and each other publish, with the local source over
repositories written under tmp_path. What test_refresh.py checks on hand-set states, this
checks on jobs that really run, and WatchJob is read over gRPC as a client reads it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2
from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from contextmesh.search.v1 import search_service_pb2_grpc
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.train.v1 import tasks_pb2 as train_tasks

from gateway.access import BUNDLE_SERVICE, PUBLIC_RULES
from gateway.bundle_service import BundleService
from gateway.bundles import BundleReader
from mergesvc.handler import MergeHandler
from meshkit.bearer import bearer_metadata
from meshkit.blob import BlobStore
from meshkit.config import SyncSettings
from meshkit.rpc import create_server
from meshkit.signing import LocalSigner
from meshkit.topology import DISCOVER, MERGE, SYNC, TRAIN, Buckets
from syncsvc.fanin import FanIn
from syncsvc.handler import DiscoverHandler, SyncHandler
from syncsvc.plan import Planner
from syncsvc.sources.local import LocalSource
from tests.gateway.conftest import Gateway
from tests.support.auth import authenticator_for
from tests.support.inproc import (
    RepoFolders,
    fs_blobs,  # noqa: F401 - fixture
    published,
    run_tasks,
)
from tests.support.polling import until

JobState = job_pb2.JobState
REPOS = ("alpha", "beta", "gamma")
# The lifecycle's order; a job's watch never goes back in it.
LIFECYCLE = (
    JobState.JOB_STATE_QUEUED,
    JobState.JOB_STATE_DISCOVERING,
    JobState.JOB_STATE_SYNCING,
    JobState.JOB_STATE_MERGING,
    JobState.JOB_STATE_BUNDLE_READY,
    JobState.JOB_STATE_TRAINING,
    JobState.JOB_STATE_DONE,
)


@dataclass
class Workers:
    """The handlers of syncsvc and mergesvc over one source and blob store."""

    gateway: Gateway
    discover: DiscoverHandler
    sync: SyncHandler
    merge: MergeHandler

    async def discovery(self) -> int:
        return await run_tasks(
            self.gateway.js, DISCOVER, sync_tasks.DiscoverTask, self.discover.handle
        )

    async def syncs(self) -> int:
        return await run_tasks(self.gateway.js, SYNC, sync_tasks.SyncRepoTask, self.sync.handle)

    async def merges(self) -> int:
        return await run_tasks(self.gateway.js, MERGE, merge_tasks.MergeTask, self.merge.handle)

    async def all(self) -> None:
        """Discovery, then every sync, then the merge: one job through to its bundle."""
        await self.discovery()
        await self.syncs()
        await self.merges()

    async def job(self, job_id: str) -> job_pb2.Job:
        return (await self.gateway.jobs.get(job_id))[0].job


async def open_workers(
    gateway: Gateway, blobs: BlobStore, root: Path, *, training: bool
) -> Workers:
    js, jobs = gateway.js, gateway.jobs
    outcomes = await js.key_value(Buckets.OUTCOMES.name)
    pointers = await js.key_value(Buckets.BUNDLES.name)
    fanin = FanIn(js, jobs, outcomes)
    source = LocalSource(root)
    return Workers(
        gateway,
        DiscoverHandler(js, jobs, fanin, Planner(blobs, pointers, source)),
        SyncHandler(jobs, fanin, blobs, source, SyncSettings()),
        MergeHandler(
            js,
            jobs,
            outcomes,
            pointers,
            await js.key_value(Buckets.MODELS.name),
            blobs,
            training=training,
        ),
    )


@pytest.fixture
def repos(tmp_path: Path, user: str) -> RepoFolders:
    folders = RepoFolders(tmp_path / "repos")
    for name in REPOS:
        folders.add(user, name, description=f"The {name} project.", readme=f"# {name}\n")
    return folders


@pytest.fixture
async def workers(gateway: Gateway, blobs: BlobStore, repos: RepoFolders) -> Workers:
    return await open_workers(gateway, blobs, repos.root, training=True)


async def test_a_refresh_joins_the_running_job_and_queues_nothing(
    gateway: Gateway, workers: Workers, user: str
) -> None:
    first, _ = await gateway.refresher.refresh(user, force=False)
    assert await workers.discovery() == 1
    assert (await workers.job(first.id)).state == JobState.JOB_STATE_SYNCING

    again, coalesced = await gateway.refresher.refresh(user, force=False)
    assert coalesced and again.id == first.id
    assert again.state == JobState.JOB_STATE_SYNCING and again.total == len(REPOS)
    assert await published(gateway.js, DISCOVER, sync_tasks.DiscoverTask) == []

    # The joined job runs on as one: each repository synced once, one merge, one bundle.
    assert await workers.syncs() == len(REPOS)
    assert await workers.merges() == 1
    done = await workers.job(first.id)
    assert done.state == JobState.JOB_STATE_BUNDLE_READY
    assert (done.synced, done.unchanged, done.failed) == (len(REPOS), 0, 0)


async def test_a_refresh_beside_a_ready_bundle_is_a_new_job_that_skips_unchanged_repositories(
    gateway: Gateway, workers: Workers, user: str
) -> None:
    first, _ = await gateway.refresher.refresh(user, force=False)
    await workers.all()
    ready = await workers.job(first.id)
    assert ready.state == JobState.JOB_STATE_BUNDLE_READY

    second, coalesced = await gateway.refresher.refresh(user, force=False)
    assert not coalesced and second.id != first.id
    assert second.state == JobState.JOB_STATE_QUEUED
    assert (await workers.job(first.id)) == ready  # its training goes on untouched

    await workers.discovery()
    assert await workers.syncs() == 0  # nothing changed: nothing fetched
    await workers.merges()
    job = await workers.job(second.id)
    assert job.state == JobState.JOB_STATE_BUNDLE_READY
    assert (job.total, job.unchanged, job.synced) == (len(REPOS), len(REPOS), 0)
    assert job.bundle.content_hash == ready.bundle.content_hash
    trains = await published(gateway.js, TRAIN, train_tasks.TrainTask)
    assert [t.meta.job_id for _, t in trains] == [first.id, second.id]


async def test_a_forced_refresh_syncs_every_repository_again(
    gateway: Gateway, workers: Workers, user: str
) -> None:
    first, _ = await gateway.refresher.refresh(user, force=False)
    await workers.all()
    assert (await workers.job(first.id)).state == JobState.JOB_STATE_BUNDLE_READY

    forced, _ = await gateway.refresher.refresh(user, force=True)
    await workers.discovery()
    assert await workers.syncs() == len(REPOS)  # unchanged, yet fetched again
    await workers.merges()
    job = await workers.job(forced.id)
    assert job.state == JobState.JOB_STATE_BUNDLE_READY
    assert (job.total, job.synced, job.unchanged) == (len(REPOS), len(REPOS), 0)


@dataclass
class Client:
    stub: bundle_service_pb2_grpc.BundleServiceStub
    metadata: tuple[tuple[str, str], ...]


@pytest.fixture
async def client(
    gateway: Gateway, blobs: BlobStore, signer: LocalSigner, user: str
) -> AsyncIterator[Client]:
    """BundleService behind the gateway's interceptors, and a caller that acts for `user`."""
    nowhere = grpc.aio.insecure_channel("127.0.0.1:9")  # search is never called here
    service = BundleService(
        gateway.refresher,
        gateway.jobs,
        BundleReader(await gateway.js.key_value(Buckets.BUNDLES.name), blobs),
        search_service_pb2_grpc.SearchServiceStub(nowhere),
        gateway.schedules,
        gateway.callbacks,
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
        yield Client(
            bundle_service_pb2_grpc.BundleServiceStub(channel),
            bearer_metadata(signer.mint(users=[user])),
        )
    finally:
        await channel.close()
        await server.server.stop(grace=None)
        await nowhere.close()


async def test_watch_job_streams_the_job_from_queued_to_its_end(
    gateway: Gateway, blobs: BlobStore, repos: RepoFolders, client: Client, user: str
) -> None:
    workers = await open_workers(gateway, blobs, repos.root, training=False)
    refreshed = await client.stub.RefreshBundle(
        pb.RefreshBundleRequest(user=user), metadata=client.metadata, timeout=10
    )
    seen: list[pb.WatchJobResponse] = []

    async def watch() -> None:
        call = client.stub.WatchJob(
            pb.WatchJobRequest(id=refreshed.job.id), metadata=client.metadata
        )
        async for message in call:
            seen.append(message)

    watching = asyncio.create_task(watch())
    try:
        await until(lambda: len(seen) == 1)
        await workers.discovery()
        await until(lambda: seen[-1].job.state == JobState.JOB_STATE_SYNCING)
        await workers.syncs()
        await until(lambda: seen[-1].job.state == JobState.JOB_STATE_MERGING)
        await workers.merges()
        await asyncio.wait_for(watching, 10)  # the stream ends on its own
    finally:
        watching.cancel()

    first, last = seen[0], seen[-1]
    assert first.job.state == JobState.JOB_STATE_QUEUED and not first.final
    states = [m.job.state for m in seen]
    assert states == sorted(states, key=LIFECYCLE.index), "the watch went back in time"
    syncing = [m.job for m in seen if m.job.state == JobState.JOB_STATE_SYNCING]
    assert {j.total for j in syncing} == {len(REPOS)}
    progress = [j.synced for j in syncing]
    assert progress == sorted(progress)
    # Only the last message says the job ended, and with what: a client needs no trailers.
    assert [m.final for m in seen] == [False] * (len(seen) - 1) + [True]
    assert last.job.state == JobState.JOB_STATE_DONE and last.bundle_ready
    assert (last.job.synced, last.job.total) == (len(REPOS), len(REPOS))
    assert last.job.training.state == job_pb2.TRAINING_STATE_DISABLED
    assert not any(m.bundle_ready for m in seen if m.job.state != JobState.JOB_STATE_DONE)
    bundle = await client.stub.GetBundle(
        pb.GetBundleRequest(user=user), metadata=client.metadata, timeout=10
    )
    assert bundle.bundle == last.job.bundle and bundle.job_id == refreshed.job.id
