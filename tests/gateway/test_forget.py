"""DeleteUser in-process: what a deletion under way does to a refresh, schedule or callback
that races it (each takes itself back and is refused), and that a deletion erases every key
of the user and none of anyone else's."""

from __future__ import annotations

import asyncio

import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.job.v1 import job_pb2
from google.protobuf import duration_pb2
from nats.js import JetStreamContext

from gateway.bundle_service import BundleService
from meshkit.errors import JobNotFoundError
from meshkit.rpc import FailedPrecondition
from meshkit.topology import ALL_BUCKETS, Buckets
from tests.gateway.conftest import Gateway
from tests.support.polling import until


async def keys_naming(js: JetStreamContext, *names: str) -> list[str]:
    """Every stored key (markers included) in any bucket with one of names as a token."""
    found = []
    for bucket in ALL_BUCKETS:
        info = await js.stream_info(f"KV_{bucket.name}", subjects_filter=">")
        found += [s for s in info.state.subjects or {} if set(s.split(".")) & set(names)]
    return found


async def test_a_refresh_during_a_deletion_is_refused_and_leaves_nothing(
    gateway: Gateway, js: JetStreamContext, user: str
) -> None:
    forgetting = await js.key_value(Buckets.FORGETTING.name)
    await forgetting.put(user, b"")  # a deletion under way (or interrupted)
    with pytest.raises(FailedPrecondition, match="being forgotten"):
        await gateway.refresher.refresh(user, force=False)
    await forgetting.purge(user)
    assert await keys_naming(js, user) == [f"$KV.{Buckets.FORGETTING.name}.{user}"]
    assert await gateway.refresher.history.job_ids(user) == []


async def test_a_schedule_or_callback_set_during_a_deletion_is_taken_back(
    gateway: Gateway, js: JetStreamContext, user: str
) -> None:
    service = BundleService(
        gateway.refresher,
        gateway.jobs,
        None,
        None,
        gateway.schedules,
        gateway.callbacks,  # type: ignore[arg-type]
    )
    await (await js.key_value(Buckets.FORGETTING.name)).put(user, b"")
    with pytest.raises(FailedPrecondition):
        await service.SetSchedule(
            pb.SetScheduleRequest(user=user, interval=duration_pb2.Duration(seconds=3600)),
            None,  # type: ignore[arg-type]
        )
    with pytest.raises(FailedPrecondition):
        await service.SetCallback(
            pb.SetCallbackRequest(user=user, url="http://127.0.0.1:9/hook"),
            None,  # type: ignore[arg-type]
        )
    stored = await keys_naming(js, user)
    assert stored == [f"$KV.{Buckets.FORGETTING.name}.{user}"]


async def test_delete_user_erases_their_keys_and_only_theirs(
    gateway: Gateway, js: JetStreamContext, user: str
) -> None:
    other = f"{user}x"
    mine, _ = await gateway.refresher.refresh(user, force=False)
    theirs, _ = await gateway.refresher.refresh(other, force=False)
    await gateway.schedules.set(user, duration_pb2.Duration(seconds=3600), 0.0)
    await gateway.callbacks.set(user, "http://127.0.0.1:9/hook")
    await (await js.key_value(Buckets.OUTCOMES.name)).put(f"{mine.id}.0", b"x")
    await gateway.blobs.put(f"bundles/{user}/abc.json", b"{}")
    await gateway.blobs.put(f"repos/{user}/r/abc.json", b"{}")
    await gateway.blobs.put(f"jobs/{mine.id}/plan.json", b"[]")
    await gateway.blobs.put(f"bundles/{other}/abc.json", b"{}")

    forgotten = await gateway.forgetter.forget(user)

    assert (forgotten.jobs, forgotten.blobs) == (1, 3)
    assert await keys_naming(js, user, mine.id) == []
    with pytest.raises(JobNotFoundError):
        await gateway.jobs.get(mine.id)
    assert (await gateway.jobs.get(theirs.id))[0].job.user == other
    assert [b.key async for b in gateway.blobs.list()] == [f"bundles/{other}/abc.json"]
    again = await gateway.forgetter.forget(user)
    assert (again.jobs, again.blobs, again.dead_letters) == (0, 0, 0)


async def test_a_watch_of_a_running_job_of_a_forgotten_user_ends(
    gateway: Gateway, js: JetStreamContext, user: str
) -> None:
    job, _ = await gateway.refresher.refresh(user, force=False)
    updates = gateway.jobs.watch(job.id)
    assert (await anext(updates)).state == job_pb2.JOB_STATE_QUEUED
    following = asyncio.ensure_future(anext(updates))  # opens the watch, as WatchJob does
    await until(lambda: watching(js, job.id), what="the watch to follow the job's record")
    await gateway.forgetter.forget(user)
    ended = await asyncio.wait_for(following, 10)
    assert ended.state == job_pb2.JOB_STATE_CANCELLED
    assert "forgotten" in ended.error_status.message
    await updates.aclose()


async def watching(js: JetStreamContext, job_id: str) -> bool:
    """Whether a consumer follows this job's key. (Counting the stream's consumers is not
    enough: other tests' watchers on the bucket come and go meanwhile.)"""
    subject = f"$KV.{Buckets.JOBS.name}.{job_id}"
    infos = await js.consumers_info(f"KV_{Buckets.JOBS.name}")
    return any(
        info.config.filter_subject == subject or subject in (info.config.filter_subjects or [])
        for info in infos
    )
