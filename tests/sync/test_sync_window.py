"""The sync window against a real nats-server, the filesystem blob store and the local source:
a job never has more than its window of sync tasks out, every repository is synced once and
merged once whatever redeliveries and crashes do, and a small job started while a big one
runs gets its tasks ahead of the big one's remainder."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable
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
from meshkit.config import SyncSettings
from meshkit.domain.bundle import bundle_index_key, bundle_key
from meshkit.domain.ids import discover_msg_id, new_job_id
from meshkit.jobs import JobStore
from meshkit.topology import MERGE, SYNC, Buckets
from meshkit.worker import Delivery, Failure
from syncsvc.fanin import FanIn
from syncsvc.handler import DiscoverHandler, SyncHandler
from syncsvc.plan import Plan, Planner
from syncsvc.sources.base import FetchedRepo, RepoListing
from syncsvc.sources.local import LocalSource
from syncsvc.window import SyncWindow
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
WINDOW = 3
Deliver = Callable[[sync_tasks.SyncRepoTask, Delivery], Awaitable[None]]


def entry(stale: bool) -> dict:
    return {"stale": stale}


def test_each_place_of_the_window_is_a_lane_over_the_stale_repositories() -> None:
    #            0     1      2     3     4      5     6     7
    stale = [True, False, True, True, False, True, True, True]
    plan = Plan([entry(s) for s in stale], "", window=2)
    assert plan.stale == [0, 2, 3, 5, 6, 7]
    assert plan.opening() == [0, 2]
    assert [plan.successor(i) for i in plan.stale] == [3, 5, 6, 7, None, None]
    assert plan.successor(1) is None  # unchanged: counted by discovery, no lane
    assert Plan([entry(True)] * 3, "", window=5).opening() == [0, 1, 2]


class PerRepoCountingSource(LocalSource):
    """The local source, counting the fetches of each repository."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fetches: Counter[str] = Counter()

    async def fetch(
        self,
        repo: RepoListing,
        *,
        extra_files: tuple[str, ...],
        max_file_bytes: int,
        user: str | None = None,
    ) -> FetchedRepo:
        self.fetches[repo.full_name] += 1
        return await super().fetch(repo, extra_files=extra_files, max_file_bytes=max_file_bytes)


@dataclass
class Mesh:
    """syncsvc's two handlers over one nats-server, and a worker loop that drives them."""

    js: JetStreamContext
    jobs: JobStore
    blobs: BlobStore
    repos: RepoFolders
    source: PerRepoCountingSource
    discover: DiscoverHandler
    sync: SyncHandler

    async def refresh(self, user: str, names: int) -> str:
        """A user with `names` repositories, and their refresh discovered; the job's id."""
        for n in range(names):
            self.repos.add(user, f"repo-{n:03d}", description=f"Project {n}.")
        job_id = new_job_id()
        record = job_record_pb2.JobRecord(
            job=job_pb2.Job(id=job_id, user=user, state=JobState.JOB_STATE_QUEUED)
        )
        record.job.create_time.GetCurrentTime()
        await self.jobs.create(record)
        task = sync_tasks.DiscoverTask(
            meta=task_pb2.TaskMeta(job_id=job_id, task_id=discover_msg_id(job_id)), user=user
        )
        await self.discover.handle(task, delivery())
        return job_id

    async def job(self, job_id: str) -> job_pb2.Job:
        return (await self.jobs.get(job_id))[0].job

    async def out(self) -> int:
        """Sync tasks in the stream: queued, or delivered and not yet acknowledged."""
        return (await self.js.stream_info(SYNC.stream)).state.messages

    async def drain(self, *, deliver: Deliver | None = None) -> list[sync_tasks.SyncRepoTask]:
        """Deliver SYNC's tasks one at a time, oldest first, as a worker with one slot would,
        until none is left; `deliver` replaces the handler call. A delivery that raises is
        handed back for redelivery. Return the tasks in the order they completed."""
        sub = await self.js.pull_subscribe(SYNC.subject, durable=SYNC.consumer, stream=SYNC.stream)
        done: list[sync_tasks.SyncRepoTask] = []
        try:
            while await self.out():
                for msg in await sub.fetch(batch=1, timeout=2):
                    task = sync_tasks.SyncRepoTask()
                    task.ParseFromString(msg.data)
                    attempt = Delivery(msg, msg.metadata.num_delivered, SYNC.max_deliver)
                    try:
                        await (deliver or self.sync.handle)(task, attempt)
                    except Crash:
                        await msg.nak()
                        continue
                    await msg.ack_sync()
                    done.append(task)
        finally:
            await sub.unsubscribe()
        return done


class Crash(Exception):
    """A worker dying mid-task: its delivery is not acknowledged."""


@pytest.fixture
async def mesh(js: JetStreamContext, blobs: BlobStore, tmp_path: Path) -> Mesh:
    jobs = await JobStore.open(js)
    source = PerRepoCountingSource(tmp_path / "repos")
    fanin = FanIn(js, jobs, await js.key_value(Buckets.OUTCOMES.name))
    pointers = await js.key_value(Buckets.BUNDLES.name)
    return Mesh(
        js,
        jobs,
        blobs,
        RepoFolders(tmp_path / "repos"),
        source,
        DiscoverHandler(js, jobs, fanin, Planner(blobs, pointers, source, window=WINDOW)),
        SyncHandler(jobs, fanin, blobs, source, SyncSettings()),
    )


async def merges_of(js: JetStreamContext, job_id: str) -> int:
    found = await published(js, MERGE, merge_tasks.MergeTask)
    return sum(1 for _, task in found if task.meta.job_id == job_id)


async def test_a_job_never_has_more_than_its_window_out_and_syncs_everything_once(
    mesh: Mesh,
) -> None:
    job_id = await mesh.refresh(new_user(), 10)
    assert await mesh.out() == WINDOW
    most_out = 0

    async def measured(task: sync_tasks.SyncRepoTask, attempt: Delivery) -> None:
        nonlocal most_out
        await mesh.sync.handle(task, attempt)
        # Counted and not yet acknowledged: this task is still in the stream, but not out.
        most_out = max(most_out, await mesh.out() - 1)

    done = await mesh.drain(deliver=measured)
    assert most_out == WINDOW
    assert sorted(t.index for t in done) == list(range(10))
    assert set(mesh.source.fetches.values()) == {1} and len(mesh.source.fetches) == 10
    job = await mesh.job(job_id)
    assert (job.state, job.synced) == (JobState.JOB_STATE_MERGING, 10)
    assert await merges_of(mesh.js, job_id) == 1


async def test_only_stale_repositories_take_places_in_the_window(mesh: Mesh) -> None:
    user = new_user()
    for n in range(8):
        mesh.repos.add(user, f"repo-{n:03d}", description=f"Project {n}.")
    listing = await mesh.source.list_repositories(user)
    unchanged = {r.full_name: r.fingerprint for r in listing if r.full_name[-1] in "0246"}
    await last_bundle(mesh, user, unchanged)

    job_id = await mesh.refresh(user, 8)
    assert await mesh.out() == WINDOW
    done = await mesh.drain()
    assert sorted(t.index for t in done) == [1, 3, 5, 7]
    assert sorted(mesh.source.fetches) == [f"{user}/repo-00{n}" for n in (1, 3, 5, 7)]
    job = await mesh.job(job_id)
    assert (job.state, job.synced, job.unchanged) == (JobState.JOB_STATE_MERGING, 4, 4)


async def test_redeliveries_and_crashes_between_count_and_publish_sync_each_once(
    mesh: Mesh,
) -> None:
    job_id = await mesh.refresh(new_user(), 12)
    crashed: set[int] = set()
    rng = random.Random(14)

    class CrashingWindow(SyncWindow):
        async def advance(self, record: job_record_pb2.JobRecord, index: int) -> None:
            if index not in crashed and rng.random() < 0.5:
                crashed.add(index)  # counted, and the lane's next task never went out
                raise Crash(index)
            await super().advance(record, index)

    mesh.sync.window = CrashingWindow(mesh.js, mesh.blobs)

    async def twice_sometimes(task: sync_tasks.SyncRepoTask, attempt: Delivery) -> None:
        await mesh.sync.handle(task, attempt)
        if rng.random() < 0.3:  # a late redelivery of a task that completed
            await mesh.sync.handle(task, Delivery(attempt.msg, attempt.attempt + 1, 5))

    done = await mesh.drain(deliver=twice_sometimes)
    assert crashed  # the seed crashes some tasks after their count
    assert sorted(t.index for t in done) == list(range(12))
    assert set(mesh.source.fetches.values()) == {1} and len(mesh.source.fetches) == 12
    job = await mesh.job(job_id)
    assert (job.state, job.synced) == (JobState.JOB_STATE_MERGING, 12)
    assert await merges_of(mesh.js, job_id) == 1


async def test_a_parked_task_still_lets_its_lane_go_on(mesh: Mesh) -> None:
    job_id = await mesh.refresh(new_user(), 7)

    async def park_index_one(task: sync_tasks.SyncRepoTask, attempt: Delivery) -> None:
        if task.index == 1:
            await mesh.sync.on_dead_letter(task, Failure("every delivery crashed"))
        else:
            await mesh.sync.handle(task, attempt)

    done = await mesh.drain(deliver=park_index_one)
    assert sorted(t.index for t in done) == list(range(7))  # 1 -> 4 went out all the same
    job = await mesh.job(job_id)
    assert (job.state, job.synced, job.failed) == (JobState.JOB_STATE_MERGING, 6, 1)
    assert await merges_of(mesh.js, job_id) == 1


async def test_a_cancelled_job_puts_out_nothing_more(mesh: Mesh) -> None:
    job_id = await mesh.refresh(new_user(), 20)
    first = True

    async def cancel_after_the_first(task: sync_tasks.SyncRepoTask, attempt: Delivery) -> None:
        nonlocal first
        await mesh.sync.handle(task, attempt)
        if first:
            first = False
            await mesh.jobs.end(
                job_id, JobState.JOB_STATE_CANCELLED, "cancelled", code=job_pb2.ERROR_CODE_CANCELLED
            )

    done = await mesh.drain(deliver=cancel_after_the_first)
    # The window's first tasks and the first one's successor came out; nothing after.
    assert len(done) == WINDOW + 1
    assert sum(mesh.source.fetches.values()) == 1
    assert await merges_of(mesh.js, job_id) == 0


async def test_a_small_job_started_during_a_big_one_goes_ahead_of_its_remainder(
    mesh: Mesh,
) -> None:
    big = await mesh.refresh(new_user(), 40)
    small = await mesh.refresh(new_user(), 3)
    done = [t.meta.job_id for t in await mesh.drain()]

    assert len(done) == 43
    last_small = max(i for i, job_id in enumerate(done) if job_id == small)
    # Behind the big job's window only, not behind its 40 tasks.
    assert last_small == WINDOW + 3 - 1
    assert (await mesh.job(small)).state == JobState.JOB_STATE_MERGING
    assert (await mesh.job(big)).state == JobState.JOB_STATE_MERGING


async def last_bundle(mesh: Mesh, user: str, fingerprints: dict[str, str]) -> None:
    """Point the user at a bundle whose index holds these fingerprints, all synced."""
    digest = "c" * 64
    index = bundle_pb2.BundleIndex(
        user=user,
        content_hash=digest,
        repositories=[
            bundle_pb2.RepoEntry(
                repository=name,
                fingerprint=fingerprint,
                status=RepoStatus.REPO_STATUS_SYNCED,
                result_key=f"repos/{name}/{'d' * 64}.json",
            )
            for name, fingerprint in fingerprints.items()
        ],
    )
    index_key = bundle_index_key(user, digest, "01J0000000000000000000PREV")
    await mesh.blobs.create(index_key, index.SerializeToString())
    pointer = bundle_pb2.BundlePointer(
        bundle=job_pb2.BundleRef(content_hash=digest, blob_key=bundle_key(user, digest)),
        index_key=index_key,
        job_id="01J0000000000000000000PREV",
    )
    await mesh.discover.planner.pointers.put(user, pointer.SerializeToString())
