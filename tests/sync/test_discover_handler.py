"""The discover handler against a real nats-server, the filesystem blob store and the local
source: what it plans, what it publishes, what it skips, and how it ends a job it cannot do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2
from nats.js import JetStreamContext

from meshkit.blob import BlobStore
from meshkit.domain.bundle import bundle_index_key, bundle_key
from meshkit.domain.ids import discover_msg_id, new_job_id, sync_msg_id
from meshkit.jobs import JobStore
from meshkit.topology import MERGE, SYNC, Buckets
from syncsvc.fanin import FanIn
from syncsvc.handler import DiscoverHandler
from syncsvc.plan import Planner, plan_key
from syncsvc.sources.base import RepoListing
from syncsvc.sources.local import LocalSource
from tests.support.inproc import (
    RepoFolders,
    delivery,
    fs_blobs,  # noqa: F401 - fixture
    new_user,
    own_connection,  # noqa: F401 - fixture: the test's own nats-server
    published,
)

JobState = job_pb2.JobState
RepoStatus = job_pb2.RepoStatus
REPOS = ("alpha", "beta", "gamma")


@dataclass
class World:
    js: JetStreamContext
    jobs: JobStore
    blobs: BlobStore
    repos: RepoFolders
    handler: DiscoverHandler
    user: str

    async def queued_job(
        self, *, force: bool = False, resync: tuple[str, ...] = ()
    ) -> sync_tasks.DiscoverTask:
        """A QUEUED job of the user and its discover task, as the gateway leaves them."""
        job_id = new_job_id()
        record = job_record_pb2.JobRecord(
            job=job_pb2.Job(id=job_id, user=self.user, state=JobState.JOB_STATE_QUEUED)
        )
        record.job.create_time.GetCurrentTime()
        await self.jobs.create(record)
        return sync_tasks.DiscoverTask(
            meta=task_pb2.TaskMeta(job_id=job_id, task_id=discover_msg_id(job_id)),
            user=self.user,
            force=force,
            resync=list(resync),
        )

    async def job(self, task: sync_tasks.DiscoverTask) -> job_record_pb2.JobRecord:
        return (await self.jobs.get(task.meta.job_id))[0]

    async def sync_tasks_of(self, task: sync_tasks.DiscoverTask) -> list[sync_tasks.SyncRepoTask]:
        found = await published(self.js, SYNC, sync_tasks.SyncRepoTask)
        return [t for _, t in found if t.meta.job_id == task.meta.job_id]

    async def last_bundle(self, fingerprints: dict[str, str], failed: tuple[str, ...] = ()) -> str:
        """Point the user at a bundle whose index holds these fingerprints (repository name
        -> fingerprint), the `failed` ones as FAILED; return its content hash."""
        digest = "c" * 64
        index = bundle_pb2.BundleIndex(
            user=self.user,
            content_hash=digest,
            repositories=[
                bundle_pb2.RepoEntry(
                    repository=f"{self.user}/{name}",
                    fingerprint=fingerprint,
                    status=RepoStatus.REPO_STATUS_FAILED
                    if name in failed
                    else RepoStatus.REPO_STATUS_SYNCED,
                    result_key=f"repos/{self.user}/{name}/{'d' * 64}.json",
                )
                for name, fingerprint in fingerprints.items()
            ],
        )
        index_key = bundle_index_key(self.user, digest, "01J0000000000000000000PREV")
        await self.blobs.create(index_key, index.SerializeToString())
        pointer = bundle_pb2.BundlePointer(
            bundle=job_pb2.BundleRef(content_hash=digest, blob_key=bundle_key(self.user, digest)),
            index_key=index_key,
            job_id="01J0000000000000000000PREV",
        )
        await self.handler.planner.pointers.put(self.user, pointer.SerializeToString())
        return digest

    async def fingerprints(self) -> dict[str, str]:
        listing = await self.handler.planner.source.list_repositories(self.user)
        return {r.full_name.split("/")[1]: r.fingerprint for r in listing}


@pytest.fixture
async def world(js: JetStreamContext, blobs: BlobStore, tmp_path: Path) -> World:
    jobs = await JobStore.open(js)
    repos = RepoFolders(tmp_path / "repos")
    user = new_user()
    for name in REPOS:
        repos.add(user, name, description=f"The {name} project.", readme=f"# {name}\n")
    fanin = FanIn(js, jobs, await js.key_value(Buckets.OUTCOMES.name))
    planner = Planner(
        blobs, await js.key_value(Buckets.BUNDLES.name), LocalSource(tmp_path / "repos")
    )
    handler = DiscoverHandler(js, jobs, fanin, planner)
    return World(js, jobs, blobs, repos, handler, user)


async def test_a_new_user_gets_one_sync_task_per_repository(world: World) -> None:
    task = await world.queued_job()
    await world.handler.handle(task, delivery())

    record = await world.job(task)
    assert record.job.state == JobState.JOB_STATE_SYNCING
    assert record.job.total == len(REPOS)
    assert (record.job.synced, record.job.unchanged, record.job.failed) == (0, 0, 0)
    assert record.counted == b"\0" and record.base_bundle_hash == ""

    job_id = task.meta.job_id
    found = await published(world.js, SYNC, sync_tasks.SyncRepoTask)
    assert [msg_id for msg_id, _ in found] == [sync_msg_id(job_id, i) for i in range(3)]
    fingerprints = await world.fingerprints()
    for index, (name, (_, sync)) in enumerate(zip(REPOS, found, strict=True)):
        assert (sync.meta.job_id, sync.user, sync.index) == (job_id, world.user, index)
        assert sync.repository == f"{world.user}/{name}"
        assert sync.fingerprint == fingerprints[name]
        assert sync.metadata.description == f"The {name} project."
        assert sync.previous_result_key == ""
    # Nothing is complete yet: no merge, and the plan is kept for redeliveries.
    assert await published(world.js, MERGE, merge_tasks.MergeTask) == []
    assert await world.blobs.exists(plan_key(job_id))


async def test_unchanged_repositories_are_carried_over_without_a_fetch(world: World) -> None:
    fingerprints = await world.fingerprints()
    digest = await world.last_bundle(
        {"alpha": fingerprints["alpha"], "beta": fingerprints["beta"], "gamma": "an old commit"}
    )
    task = await world.queued_job()
    await world.handler.handle(task, delivery())

    assert [t.repository for t in await world.sync_tasks_of(task)] == [f"{world.user}/gamma"]
    record = await world.job(task)
    assert record.job.state == JobState.JOB_STATE_SYNCING
    assert (record.job.total, record.job.unchanged, record.job.synced) == (3, 2, 0)
    assert record.base_bundle_hash == digest
    # The carried-over repositories count as done, with the previous bundle's results.
    for index, name in enumerate(("alpha", "beta")):
        stored = await world.handler.fanin.stored(task.meta.job_id, index)
        assert stored is not None and stored.status == RepoStatus.REPO_STATUS_UNCHANGED
        assert stored.result_key == f"repos/{world.user}/{name}/{'d' * 64}.json"
        assert stored.fingerprint == fingerprints[name]
    gamma = (await world.sync_tasks_of(task))[0]
    assert gamma.index == 2 and gamma.previous_result_key.startswith(f"repos/{world.user}/gamma/")


async def test_a_repository_that_failed_last_time_is_fetched_again(world: World) -> None:
    fingerprints = await world.fingerprints()
    await world.last_bundle(fingerprints, failed=("beta",))
    task = await world.queued_job()
    await world.handler.handle(task, delivery())
    assert [t.repository for t in await world.sync_tasks_of(task)] == [f"{world.user}/beta"]


async def test_resync_forces_the_named_repositories_and_force_forces_all(world: World) -> None:
    await world.last_bundle(await world.fingerprints())
    named = await world.queued_job(resync=(f"{world.user}/ALPHA",))  # any case
    await world.handler.handle(named, delivery())
    assert [t.repository for t in await world.sync_tasks_of(named)] == [f"{world.user}/alpha"]

    forced = await world.queued_job(force=True)
    await world.handler.handle(forced, delivery())
    assert len(await world.sync_tasks_of(forced)) == len(REPOS)
    assert (await world.job(forced)).job.unchanged == 0


async def test_nothing_stale_goes_straight_to_the_merge(world: World) -> None:
    await world.last_bundle(await world.fingerprints())
    task = await world.queued_job()
    await world.handler.handle(task, delivery())

    assert await world.sync_tasks_of(task) == []
    record = await world.job(task)
    assert record.job.state == JobState.JOB_STATE_MERGING
    assert (record.job.total, record.job.unchanged) == (3, 3)
    merges = await published(world.js, MERGE, merge_tasks.MergeTask)
    assert [(m.meta.job_id, m.user, m.total) for _, m in merges] == [
        (task.meta.job_id, world.user, 3)
    ]


async def test_a_user_with_no_repositories_gets_an_empty_merge(world: World) -> None:
    world.user = new_user()
    (world.repos.root / world.user).mkdir()
    task = await world.queued_job()
    await world.handler.handle(task, delivery())
    record = await world.job(task)
    assert (record.job.state, record.job.total) == (JobState.JOB_STATE_MERGING, 0)
    assert len(await published(world.js, MERGE, merge_tasks.MergeTask)) == 1


async def test_an_unknown_user_ends_the_job_failed_and_parks_nothing(world: World) -> None:
    world.user = new_user()  # no folder: the source does not know them
    task = await world.queued_job()
    await world.handler.handle(task, delivery())  # returns: the worker acks, parks nothing

    record = await world.job(task)
    assert record.job.state == JobState.JOB_STATE_FAILED
    assert record.job.error_code == job_pb2.ERROR_CODE_USER_NOT_FOUND
    assert world.user in record.job.error and "check the name" in record.job.error
    assert await world.sync_tasks_of(task) == []
    assert not await world.blobs.exists(plan_key(task.meta.job_id))

    await world.handler.handle(task, delivery(attempt=2))  # a redelivery finds it final
    assert await world.job(task) == record


async def test_a_redelivered_task_keeps_its_plan_and_counts_nothing_twice(world: World) -> None:
    fingerprints = await world.fingerprints()
    await world.last_bundle({"alpha": fingerprints["alpha"]})
    task = await world.queued_job()
    await world.handler.handle(task, delivery())
    first = await world.job(task)

    # A repository appears meanwhile; the redelivery still works from the stored plan.
    world.repos.add(world.user, "delta", description="Added after the listing.")
    await world.handler.handle(task, delivery(attempt=2))

    again = await world.job(task)
    assert (again.job.total, again.job.unchanged) == (3, 1)
    assert again.counted == first.counted
    assert [t.index for t in await world.sync_tasks_of(task)] == [1, 2]  # duplicates dropped
    assert await world.handler.fanin.stored(task.meta.job_id, 3) is None


async def test_a_redelivery_reads_its_plan_back_without_listing_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = await world.queued_job()
    await world.handler.handle(task, delivery())
    source = world.handler.planner.source
    listings: list[str] = []
    list_repositories = source.list_repositories

    async def counted(user: str) -> list[RepoListing]:
        listings.append(user)
        return await list_repositories(user)

    monkeypatch.setattr(source, "list_repositories", counted)
    await world.handler.handle(task, delivery(attempt=2))
    assert listings == [], "the stored plan answers a redelivery; the source is not asked"
    assert len(await world.sync_tasks_of(task)) == len(REPOS)


async def test_a_cancelled_job_is_not_discovered(world: World) -> None:
    task = await world.queued_job()
    await world.jobs.end(
        task.meta.job_id,
        JobState.JOB_STATE_CANCELLED,
        "cancelled",
        code=job_pb2.ERROR_CODE_CANCELLED,
    )
    await world.handler.handle(task, delivery())
    assert (await world.job(task)).job.state == JobState.JOB_STATE_CANCELLED
    assert await world.sync_tasks_of(task) == []
    assert not await world.blobs.exists(plan_key(task.meta.job_id))
