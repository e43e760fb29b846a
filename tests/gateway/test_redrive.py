"""Redrive re-runs a parked task's work in a new job, once per letter, and never publishes
what a letter says to an arbitrary subject."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest
from contextmesh.job.v1 import job_pb2
from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from contextmesh.ops.v1 import ops_service_pb2 as ops_pb
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2
from contextmesh.train.v1 import tasks_pb2 as train_tasks
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError

from gateway.ops_service import OpsService
from gateway.refresh import new_record
from meshkit.domain.ids import discover_msg_id, new_job_id, sync_msg_id, train_msg_id
from meshkit.erasure import purge
from meshkit.jobs import JobStore
from meshkit.publish import publish_task
from meshkit.rpc import FailedPrecondition, NotFound
from meshkit.topology import DEADLETTER, DISCOVER, MERGE, SYNC, TRAIN, Buckets, WorkStream
from meshkit.worker import park
from tests.gateway.conftest import Gateway

JobState = job_pb2.JobState
HASH = "ab" * 32


async def parked(js: JetStreamContext, ws: WorkStream, task: Message) -> int:
    """Park `task` as a worker does after its last delivery; the letter's sequence. Its
    job's record exists, as when a worker parks (a letter of a gone job is not kept)."""
    jobs = await JobStore.open(js)
    job_id = task.meta.job_id  # type: ignore[attr-defined]
    with contextlib.suppress(KeyWrongLastSequenceError):  # recorded by an earlier letter
        await jobs.create(new_record(job_id, task.user))  # type: ignore[attr-defined]
    return await park(
        js,
        ws,
        payload=task.SerializeToString(),
        stream_seq=random.randrange(1 << 40),
        msg_id=task.meta.task_id,  # type: ignore[attr-defined]
        job_id=task.meta.job_id,  # type: ignore[attr-defined]
        reason="RuntimeError: the blob store was down",
        deliveries=ws.max_deliver,
    )


def sync_task(user: str, job_id: str) -> sync_tasks.SyncRepoTask:
    return sync_tasks.SyncRepoTask(
        meta=task_pb2.TaskMeta(job_id=job_id, task_id=sync_msg_id(job_id, 3)),
        user=user,
        repository=f"{user}/broken",
        index=3,
        fingerprint="fp",
    )


async def published(js: JetStreamContext, ws: WorkStream, kind: type[Message], msg_id: str):
    """The task last published on ws's subject, which must carry `msg_id`."""
    stored = await js.get_last_msg(ws.stream, ws.subject)
    assert stored.headers and stored.headers["Nats-Msg-Id"] == msg_id
    return kind.FromString(stored.data)


async def letter_exists(js: JetStreamContext, seq: int) -> bool:
    try:
        await js.get_msg(DEADLETTER, seq)
    except Exception:
        return False
    return True


async def test_a_redriven_sync_task_refreshes_its_user_and_fetches_that_repository(
    gateway: Gateway, user: str
) -> None:
    failed_job = new_job_id()
    seq = await parked(gateway.js, SYNC, sync_task(user, failed_job))

    redriven = await gateway.redriver.redrive(seq)

    job = redriven.job
    assert job.id != failed_job and job.user == user and job.state == JobState.JOB_STATE_QUEUED
    assert (job.redrive.sequence, job.redrive.stream, job.redrive.job_id) == (
        seq,
        "SYNC",
        failed_job,
    )
    assert job.redrive.repository == f"{user}/broken"
    discover = await published(
        gateway.js, DISCOVER, sync_tasks.DiscoverTask, discover_msg_id(job.id)
    )
    assert discover.user == user and list(discover.resync) == [f"{user}/broken"]
    assert not discover.force
    assert redriven.letter.job_id == failed_job and redriven.stream == "SYNC"
    assert not await letter_exists(gateway.js, seq)
    # It is the user's latest job: a refresh now joins it.
    again, coalesced = await gateway.refresher.refresh(user, force=False)
    assert coalesced and again.id == job.id


async def test_redriving_a_letter_twice_does_the_work_once(gateway: Gateway, user: str) -> None:
    seq = await parked(gateway.js, SYNC, sync_task(user, new_job_id()))
    first, second = await asyncio.gather(
        gateway.redriver.redrive(seq), gateway.redriver.redrive(seq), return_exceptions=True
    )
    # Two redrives at once: one starts the job; the other answers it or says to ask again.
    answers = [a for a in (first, second) if not isinstance(a, BaseException)]
    assert answers, (first, second)
    job_id = answers[0].job.id
    assert all(a.job.id == job_id for a in answers)
    later = await gateway.redriver.redrive(seq)
    assert later.job.id == job_id and later.job.redrive.sequence == seq
    active = await gateway.js.key_value(Buckets.ACTIVE.name)
    assert (await active.get(user)).value == job_id.encode()
    record, _ = await gateway.jobs.get(job_id)
    assert record.job.state == JobState.JOB_STATE_QUEUED  # nothing ran it twice


async def test_a_redriven_merge_or_discover_task_is_a_new_refresh(
    gateway: Gateway, user: str
) -> None:
    old = new_job_id()
    merge = merge_tasks.MergeTask(
        meta=task_pb2.TaskMeta(job_id=old, task_id=f"merge:{old}"), user=user, total=2
    )
    job = (await gateway.redriver.redrive(await parked(gateway.js, MERGE, merge))).job
    assert job.redrive.stream == "MERGE" and job.state == JobState.JOB_STATE_QUEUED
    discover = sync_tasks.DiscoverTask(
        meta=task_pb2.TaskMeta(job_id=old, task_id=discover_msg_id(old)), user=user, force=True
    )
    forced = (await gateway.redriver.redrive(await parked(gateway.js, DISCOVER, discover))).job
    assert forced.id != job.id and forced.force and forced.redrive.stream == "DISCOVER"


async def test_a_redriven_merge_of_a_push_job_re_syncs_what_the_push_named(
    gateway: Gateway, user: str
) -> None:
    # A merge task names no repositories: the new refresh takes the failed job's list, or
    # the pushed repositories would wait for their fingerprints to move.
    pushed = new_record(new_job_id(), user)
    pushed.job.resync.extend([f"{user}/site", f"{user}/api"])
    await gateway.jobs.create(pushed)
    merge = merge_tasks.MergeTask(
        meta=task_pb2.TaskMeta(job_id=pushed.job.id, task_id=f"merge:{pushed.job.id}"),
        user=user,
        total=2,
    )

    job = (await gateway.redriver.redrive(await parked(gateway.js, MERGE, merge))).job

    assert list(job.resync) == [f"{user}/site", f"{user}/api"] and not job.force
    discover = await published(
        gateway.js, DISCOVER, sync_tasks.DiscoverTask, discover_msg_id(job.id)
    )
    assert list(discover.resync) == [f"{user}/site", f"{user}/api"]


async def test_a_redriven_merge_of_a_forced_job_is_forced(gateway: Gateway, user: str) -> None:
    forced = new_record(new_job_id(), user)
    forced.job.force = True
    await gateway.jobs.create(forced)
    merge = merge_tasks.MergeTask(
        meta=task_pb2.TaskMeta(job_id=forced.job.id, task_id=f"merge:{forced.job.id}"),
        user=user,
        total=2,
    )

    job = (await gateway.redriver.redrive(await parked(gateway.js, MERGE, merge))).job

    assert job.force
    discover = await published(
        gateway.js, DISCOVER, sync_tasks.DiscoverTask, discover_msg_id(job.id)
    )
    assert discover.force


async def test_a_redriven_train_task_is_a_job_that_trains_that_bundle(
    gateway: Gateway, user: str
) -> None:
    old = new_job_id()
    train = train_tasks.TrainTask(
        meta=task_pb2.TaskMeta(job_id=old, task_id=train_msg_id(old)),
        user=user,
        bundle_hash=HASH,
        bundle_key=f"bundles/{user}/{HASH}.json",
    )
    job = (await gateway.redriver.redrive(await parked(gateway.js, TRAIN, train))).job
    assert job.state == JobState.JOB_STATE_BUNDLE_READY
    assert job.bundle.content_hash == HASH and job.bundle.blob_key == train.bundle_key
    assert job.training.state == job_pb2.TRAINING_STATE_QUEUED
    assert job.HasField("bundle_ready_time") and job.redrive.stream == "TRAIN"
    task = await published(gateway.js, TRAIN, train_tasks.TrainTask, train_msg_id(job.id))
    assert (task.meta.job_id, task.user, task.bundle_hash) == (job.id, user, HASH)


async def test_an_unknown_letter_is_not_found(gateway: Gateway) -> None:
    with pytest.raises(NotFound, match="ListDeadLetters"):
        await gateway.redriver.redrive(1 << 50)


async def test_a_forged_letter_is_refused_and_nothing_is_published(
    gateway: Gateway, nc: Client, user: str
) -> None:
    js = gateway.js
    forged_subject = f"forged.{user}"
    received: list[bytes] = []

    async def receive(msg: Msg) -> None:
        received.append(msg.data)

    sub = await nc.subscribe(forged_subject, cb=receive)

    # A letter whose payload names another subject: redrive reads the stream from where the
    # letter is parked, and the payload is no SYNC task, so it is refused.
    letter = task_pb2.DeadLetter(subject=forged_subject, payload=b"\x0a\x03abc", job_id="x")
    ack = await publish_task(js, "contextmesh.deadletter.SYNC", letter, msg_id=f"forged:{user}")
    with pytest.raises(FailedPrecondition, match="can never run"):
        await gateway.redriver.redrive(ack.seq)
    # A letter parked under a stream that does not exist.
    valid = sync_task(user, new_job_id())
    letter = task_pb2.DeadLetter(subject=forged_subject, payload=valid.SerializeToString())
    ack = await publish_task(js, "contextmesh.deadletter.EVIL", letter, msg_id=f"evil:{user}")
    with pytest.raises(FailedPrecondition, match="unknown stream"):
        await gateway.redriver.redrive(ack.seq)

    await nc.flush()
    await sub.unsubscribe()
    assert received == []
    assert await letter_exists(js, ack.seq)  # kept for an operator to look at
    # Listed with the subject its stream names, never the one its payload claims.
    listed = await OpsService(js, gateway.redriver, gateway.forgetter).ListDeadLetters(
        ops_pb.ListDeadLettersRequest(),
        None,  # type: ignore[arg-type]
    )
    assert forged_subject not in [t.subject for t in listed.tasks]
    assert SYNC.subject in [t.subject for t in listed.tasks]


async def test_a_redriven_merge_of_an_expired_job_is_a_plain_refresh(
    gateway: Gateway, user: str
) -> None:
    old = new_job_id()
    merge = merge_tasks.MergeTask(
        meta=task_pb2.TaskMeta(job_id=old, task_id=f"merge:{old}"), user=user, total=2
    )
    seq = await parked(gateway.js, MERGE, merge)
    await purge(gateway.js, Buckets.JOBS, old)  # the job's record expired since it was parked

    job = (await gateway.redriver.redrive(seq)).job

    assert job.state == JobState.JOB_STATE_QUEUED and not job.resync and not job.force
