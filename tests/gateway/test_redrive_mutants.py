"""Redrive when a call races another or dies half-way: the next call finishes the job's work,
a call that lost the claim says to ask again, and a letter that is gone reads as not found.

Written against mutants tools/mutation.py found surviving in gateway/redrive.py
(docs/testing.md).
"""

from __future__ import annotations

import pytest
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2
from contextmesh.train.v1 import tasks_pb2 as train_tasks
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from gateway.redrive import read_letter
from meshkit.domain.ids import discover_msg_id, new_job_id, train_msg_id
from meshkit.errors import ConflictError
from meshkit.rpc import NotFound
from meshkit.topology import DISCOVER, SYNC, TRAIN
from tests.gateway.conftest import Gateway
from tests.gateway.test_redrive import HASH, letter_exists, parked, published, sync_task

JobState = job_pb2.JobState


def train_task(user: str) -> train_tasks.TrainTask:
    old = new_job_id()
    return train_tasks.TrainTask(
        meta=task_pb2.TaskMeta(job_id=old, task_id=train_msg_id(old)),
        user=user,
        bundle_hash=HASH,
        bundle_key=f"bundles/{user}/{HASH}.json",
    )


async def last_task_id(js: JetStreamContext, subject: str, stream: str) -> str | None:
    """The message id of the task last published on subject, None when there is none."""
    try:
        stored = await js.get_last_msg(stream, subject)
    except NotFoundError:
        return None
    return (stored.headers or {}).get("Nats-Msg-Id")


async def test_a_redrive_that_died_after_its_claim_is_finished_by_the_next(
    gateway: Gateway, user: str
) -> None:
    seq = await parked(gateway.js, SYNC, sync_task(user, new_job_id()))
    claimed = new_job_id()
    await gateway.redriver.redrives.create(str(seq), claimed.encode())  # then it died

    job = (await gateway.redriver.redrive(seq)).job

    assert job.id == claimed and job.redrive.sequence == seq
    await published(gateway.js, DISCOVER, sync_tasks.DiscoverTask, discover_msg_id(job.id))


async def test_a_redrive_that_died_before_queueing_is_finished_by_the_next(
    gateway: Gateway, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seq = await parked(gateway.js, SYNC, sync_task(user, new_job_id()))

    async def dies(record: object) -> None:
        raise ConnectionError("the gateway died before it queued the job")

    with monkeypatch.context() as patch:
        patch.setattr(gateway.refresher, "queue", dies)
        with pytest.raises(ConnectionError):
            await gateway.redriver.redrive(seq)

    redriven = await gateway.redriver.redrive(seq)
    assert redriven.stream == "SYNC"
    await published(gateway.js, DISCOVER, sync_tasks.DiscoverTask, discover_msg_id(redriven.job.id))


async def test_a_train_redrive_that_died_before_publishing_is_finished_by_the_next(
    gateway: Gateway, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seq = await parked(gateway.js, TRAIN, train_task(user))

    async def dies(record: object) -> None:
        raise ConnectionError("the gateway died before it published the training")

    with monkeypatch.context() as patch:
        patch.setattr(gateway.redriver, "_publish_train", dies)
        with pytest.raises(ConnectionError):
            await gateway.redriver.redrive(seq)

    job = (await gateway.redriver.redrive(seq)).job
    task = await published(gateway.js, TRAIN, train_tasks.TrainTask, train_msg_id(job.id))
    assert task.bundle_hash == HASH


async def test_redriving_a_refresh_again_once_it_has_a_bundle_starts_no_training(
    gateway: Gateway, user: str
) -> None:
    seq = await parked(gateway.js, SYNC, sync_task(user, new_job_id()))
    job = (await gateway.redriver.redrive(seq)).job

    def bundle_ready(record: job_record_pb2.JobRecord) -> bool:
        record.job.state = JobState.JOB_STATE_BUNDLE_READY
        return True

    await gateway.jobs.update(job.id, bundle_ready)  # its merge publishes the training

    again = (await gateway.redriver.redrive(seq)).job
    assert again.id == job.id
    assert await last_task_id(gateway.js, TRAIN.subject, TRAIN.stream) != train_msg_id(job.id)


async def test_a_train_redrive_whose_job_another_call_recorded_publishes_its_training(
    gateway: Gateway, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seq = await parked(gateway.js, TRAIN, train_task(user))
    record = gateway.refresher.record

    async def recorded_first_by_another_call(new: job_record_pb2.JobRecord) -> None:
        await record(new)
        await record(new)  # this call's own write finds the record there

    monkeypatch.setattr(gateway.refresher, "record", recorded_first_by_another_call)
    job = (await gateway.redriver.redrive(seq)).job

    assert job.state == JobState.JOB_STATE_BUNDLE_READY
    await published(gateway.js, TRAIN, train_tasks.TrainTask, train_msg_id(job.id))


async def test_a_redrive_that_loses_the_claim_says_to_ask_again(
    gateway: Gateway, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seq = await parked(gateway.js, SYNC, sync_task(user, new_job_id()))
    claimed = gateway.redriver._claimed

    async def claimed_by_another_call_meanwhile(sequence: int) -> str | None:
        found = await claimed(sequence)
        await gateway.redriver.redrives.create(str(sequence), new_job_id().encode())
        return found

    monkeypatch.setattr(gateway.redriver, "_claimed", claimed_by_another_call_meanwhile)
    with pytest.raises(ConflictError, match="redrive it again"):
        await gateway.redriver.redrive(seq)


class Failing:
    """A JetStream context whose get_msg raises `error`; the rest is `js`'s."""

    def __init__(self, js: JetStreamContext, error: APIError) -> None:
        self._js, self._error = js, error

    def __getattr__(self, name: str) -> object:
        return getattr(self._js, name)

    async def get_msg(self, *args: object, **kwargs: object) -> None:
        raise self._error


@pytest.mark.parametrize(
    "error",
    [
        NotFoundError(code=404, err_code=10059, description="stream not found"),
        APIError(code=410, err_code=10037, description="no message found"),
    ],
    ids=["not-found", "gone"],
)
async def test_a_letter_the_server_cannot_find_is_not_found(
    js: JetStreamContext, error: APIError
) -> None:
    with pytest.raises(NotFound, match="no dead letter with sequence 7"):
        await read_letter(Failing(js, error), 7)  # type: ignore[arg-type]


async def test_a_letter_that_could_not_be_removed_fails_the_redrive_until_it_is(
    gateway: Gateway, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seq = await parked(gateway.js, SYNC, sync_task(user, new_job_id()))
    unavailable = ServiceUnavailableError(code=503, description="no responders")

    async def fails(*args: object, **kwargs: object) -> None:
        raise unavailable

    with monkeypatch.context() as patch:
        patch.setattr(gateway.js, "delete_msg", fails)
        with pytest.raises(ServiceUnavailableError):
            await gateway.redriver.redrive(seq)
    assert await letter_exists(gateway.js, seq)  # kept: the next redrive removes it
    job = (await gateway.redriver.redrive(seq)).job

    assert job.redrive.sequence == seq and not await letter_exists(gateway.js, seq)
