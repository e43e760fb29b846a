"""The per-repository sync handler against a real nats-server, the filesystem blob store and
the local source: the result it stores, the outcome it counts, and what it does when a
repository cannot be fetched."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from contextmesh.job.v1 import job_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2
from nats.js import JetStreamContext

from meshkit.blob import BlobStore
from meshkit.config import SyncSettings
from meshkit.domain.bundle import content_hash, repo_result_key
from meshkit.domain.ids import new_job_id, sync_msg_id
from meshkit.erasure import purge
from meshkit.errors import JobNotFoundError
from meshkit.jobs import JobStore
from meshkit.topology import Buckets
from meshkit.worker import RetryLater
from syncsvc.fanin import FanIn
from syncsvc.handler import SyncHandler
from syncsvc.plan import Planner
from syncsvc.repository import failed_outcome
from syncsvc.sources.base import FetchedFile, FetchedRepo, RepoListing, Source, SourceError
from syncsvc.sources.local import LocalSource
from tests.support.inproc import (
    RepoFolders,
    delivery,
    fs_blobs,  # noqa: F401 - fixture
    new_user,
    own_connection,  # noqa: F401 - fixture: the test's own nats-server
    syncing_job,
)

JobState = job_pb2.JobState
RepoStatus = job_pb2.RepoStatus
PREVIOUS = "repos/someone/old/" + "0" * 64 + ".json"


class CountingSource(Source):
    """The local source, counting fetches; or failing every fetch with `error`."""

    def __init__(self, inner: Source, error: SourceError | None = None) -> None:
        self.inner = inner
        self.error = error
        self.fetches = 0

    async def list_repositories(self, user: str) -> list[RepoListing]:
        return await self.inner.list_repositories(user)

    async def fetch(
        self,
        repo: RepoListing,
        *,
        extra_files: tuple[str, ...],
        max_file_bytes: int,
        user: str | None = None,
    ) -> FetchedRepo:
        self.fetches += 1
        if self.error is not None:
            raise self.error
        return await self.inner.fetch(repo, extra_files=extra_files, max_file_bytes=max_file_bytes)

    async def fetch_files(
        self,
        repo: RepoListing,
        paths: tuple[str, ...],
        *,
        max_file_bytes: int,
        user: str | None = None,
    ) -> tuple[FetchedFile, ...]:
        return await self.inner.fetch_files(repo, paths, max_file_bytes=max_file_bytes)


@dataclass
class World:
    jobs: JobStore
    fanin: FanIn
    blobs: BlobStore
    repos: RepoFolders
    source: CountingSource
    user: str
    job_id: str

    def handler(self) -> SyncHandler:
        return SyncHandler(self.jobs, self.fanin, self.blobs, self.source, SyncSettings())

    async def task(self, name: str, index: int) -> sync_tasks.SyncRepoTask:
        """The sync task discovery would publish for the user's repository `name`."""
        listing = {r.full_name: r for r in await self.source.list_repositories(self.user)}
        found = listing.get(f"{self.user}/{name}")
        return sync_tasks.SyncRepoTask(
            meta=task_pb2.TaskMeta(job_id=self.job_id, task_id=sync_msg_id(self.job_id, index)),
            user=self.user,
            repository=f"{self.user}/{name}",
            index=index,
            fingerprint=found.fingerprint if found else "a commit that is gone",
            default_branch="main",
            previous_result_key=PREVIOUS,
            metadata=sync_tasks.RepoMetadata(description=found.metadata.description or "")
            if found
            else None,
        )

    async def job(self) -> job_pb2.Job:
        return (await self.jobs.get(self.job_id))[0].job


@pytest.fixture
async def world(js: JetStreamContext, blobs: BlobStore, tmp_path: Path) -> World:
    jobs = await JobStore.open(js)
    repos = RepoFolders(tmp_path / "repos")
    user = new_user()
    repos.add(user, "alpha", description="A tide predictor.", readme="# alpha\n\nTides.\n")
    repos.add(user, "beta", description="A bread timer.")
    job_id = new_job_id()
    source = CountingSource(LocalSource(tmp_path / "repos"))
    # The plan discovery stores (alpha 0, beta 1), which tells a task its lane's next one.
    planner = Planner(blobs, await js.key_value(Buckets.BUNDLES.name), source)
    await planner.plan(sync_tasks.DiscoverTask(meta=task_pb2.TaskMeta(job_id=job_id), user=user))
    await syncing_job(jobs, user, 2, job_id)
    return World(
        jobs,
        FanIn(js, jobs, await js.key_value(Buckets.OUTCOMES.name)),
        blobs,
        repos,
        source,
        user,
        job_id,
    )


async def test_a_synced_repository_is_stored_by_content_and_counted(world: World) -> None:
    task = await world.task("alpha", 0)
    await world.handler().handle(task, delivery())

    outcome = await world.fanin.stored(world.job_id, 0)
    assert outcome is not None and outcome.status == RepoStatus.REPO_STATUS_SYNCED
    assert (outcome.repository, outcome.fingerprint) == (task.repository, task.fingerprint)
    data = await world.blobs.get(outcome.result_key)
    assert outcome.result_key == repo_result_key(task.repository, content_hash(data))
    result = json.loads(data)
    assert result["repository"] == task.repository
    assert result["context"]["description"] == "A tide predictor."
    assert result["readme"]["text"] == "# alpha\n\nTides.\n"

    job = await world.job()
    assert (job.state, job.synced, job.failed) == (JobState.JOB_STATE_SYNCING, 1, 0)


async def test_a_redelivered_task_fetches_nothing_and_counts_once(world: World) -> None:
    task = await world.task("alpha", 0)
    await world.handler().handle(task, delivery())
    first = await world.fanin.stored(world.job_id, 0)

    world.repos.add(world.user, "alpha", description="Edited after the first delivery.")
    await world.handler().handle(task, delivery(attempt=2))

    assert world.source.fetches == 1
    assert await world.fanin.stored(world.job_id, 0) == first
    assert (await world.job()).synced == 1


async def test_a_repository_that_cannot_be_fetched_is_counted_failed_once(world: World) -> None:
    task = await world.task("gone", 1)  # listed, then deleted before its sync
    await world.handler().handle(task, delivery())  # returns: no retry of a lost cause

    outcome = await world.fanin.stored(world.job_id, 1)
    assert outcome is not None and outcome.status == RepoStatus.REPO_STATUS_FAILED
    assert "not found" in outcome.reason
    assert outcome.result_key == PREVIOUS  # the merge carries the previous result over
    job = await world.job()
    assert (job.synced, job.failed) == (0, 1)
    assert [(f.repository, f.reason) for f in job.failures] == [(task.repository, outcome.reason)]

    await world.handler().handle(task, delivery(attempt=2))
    assert (await world.job()).failed == 1


async def test_a_rate_limit_hands_the_task_back_until_its_last_delivery(world: World) -> None:
    world.source.error = SourceError("rate limited until 12:00", transient=True, retry_after_s=42)
    task = await world.task("beta", 1)
    with pytest.raises(RetryLater) as later:
        await world.handler().handle(task, delivery(attempt=1, max_deliver=3))
    assert later.value.delay_s == 42
    assert await world.fanin.stored(world.job_id, 1) is None
    assert (await world.job()).failed == 0

    await world.handler().handle(task, delivery(attempt=3, max_deliver=3))
    outcome = await world.fanin.stored(world.job_id, 1)
    assert outcome is not None and outcome.status == RepoStatus.REPO_STATUS_FAILED
    assert outcome.reason == "rate limited until 12:00"
    assert (await world.job()).failed == 1


async def test_the_last_repository_of_the_job_moves_it_to_merging(world: World) -> None:
    handler = world.handler()
    await handler.handle(await world.task("alpha", 0), delivery())
    await handler.handle(await world.task("beta", 1), delivery())
    job = await world.job()
    assert (job.state, job.synced) == (JobState.JOB_STATE_MERGING, 2)


async def test_a_cancelled_job_fetches_and_stores_nothing(world: World) -> None:
    await world.jobs.end(
        world.job_id, JobState.JOB_STATE_CANCELLED, "cancelled", code=job_pb2.ERROR_CODE_CANCELLED
    )
    await world.handler().handle(await world.task("alpha", 0), delivery())
    assert world.source.fetches == 0
    assert await world.fanin.stored(world.job_id, 0) is None
    assert [b async for b in world.blobs.list("repos/")] == []


async def test_a_failed_outcome_keeps_the_previous_result_and_a_bounded_reason(
    world: World,
) -> None:
    task = await world.task("beta", 1)
    outcome = failed_outcome(task, "x" * 2000)
    assert outcome.status == RepoStatus.REPO_STATUS_FAILED
    assert (outcome.repository, outcome.index, outcome.fingerprint) == (
        task.repository,
        1,
        task.fingerprint,
    )
    assert outcome.result_key == PREVIOUS and outcome.reason == "x" * 500


class ForgottenWhileFetching(CountingSource):
    """DeleteUser's purge of the job lands while the repository is fetched: after the
    handler's first look at the job, before anything is written."""

    def __init__(self, inner: Source, js: JetStreamContext, job_id: str) -> None:
        super().__init__(inner)
        self.js, self.job_id = js, job_id

    async def fetch(
        self,
        repo: RepoListing,
        *,
        extra_files: tuple[str, ...],
        max_file_bytes: int,
        user: str | None = None,
    ) -> FetchedRepo:
        await purge(self.js, Buckets.JOBS, self.job_id)
        return await super().fetch(repo, extra_files=extra_files, max_file_bytes=max_file_bytes)


async def test_a_sync_whose_job_is_forgotten_meanwhile_takes_back_what_it_wrote(
    world: World, js: JetStreamContext
) -> None:
    world.source = ForgottenWhileFetching(world.source.inner, js, world.job_id)
    task = await world.task("alpha", 0)
    with pytest.raises(JobNotFoundError):
        await world.handler().handle(task, delivery())
    assert [b.key async for b in world.blobs.list(f"repos/{world.user}/")] == []
    assert await world.fanin.stored(world.job_id, 0) is None
