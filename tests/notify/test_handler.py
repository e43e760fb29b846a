"""NotifyHandler: one signed POST per delivery, failures retried then parked, nothing sent
where nothing may or need be."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json

import pytest
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.notify.v1 import tasks_pb2 as notify_tasks
from contextmesh.task.v1 import task_pb2
from nats.aio.client import Client
from nats.js import JetStreamContext

from meshkit.domain.callbacks import CallbackStore, IPAddress
from meshkit.domain.ids import new_job_id, notify_msg_id
from meshkit.job_errors import end_with_error
from meshkit.jobs import JobStore
from meshkit.publish import publish_task
from meshkit.topology import DEADLETTER, NOTIFY, work_stream
from meshkit.worker import Delivery, PermanentError, Worker
from notifysvc.handler import NotifyHandler
from notifysvc.sender import CallbackFailed, CallbackSender, Resolver, resolve
from tests.notify.conftest import TIMING, done_job
from tests.support.callback_server import CallbackServer


def task_for(job_id: str, user: str) -> notify_tasks.NotifyTask:
    return notify_tasks.NotifyTask(
        meta=task_pb2.TaskMeta(job_id=job_id, task_id=notify_msg_id(job_id)), user=user
    )


class FirstDelivery(Delivery):
    def __init__(self) -> None:
        super().__init__(msg=None, attempt=1, max_deliver=NOTIFY.max_deliver)  # type: ignore[arg-type]


def resolving_to(*addresses: str) -> Resolver:
    async def resolver(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in addresses]

    return resolver


@pytest.fixture
async def handler(jobs: JobStore, callbacks: CallbackStore):
    sender = CallbackSender()
    yield NotifyHandler(jobs, callbacks, sender)
    await sender.close()


async def test_an_ended_job_is_posted_signed_with_the_users_secret(
    handler: NotifyHandler,
    jobs: JobStore,
    callbacks: CallbackStore,
    receiver: CallbackServer,
    user: str,
) -> None:
    job_id = new_job_id()
    await jobs.create(done_job(job_id, user))
    secret = (await callbacks.set(user, receiver.url("/hooks/cm"))).secret

    await handler.handle(task_for(job_id, user), FirstDelivery())

    [post] = receiver.received
    assert post.path == "/hooks/cm"
    expected = hmac.new(secret.encode(), post.body, hashlib.sha256).hexdigest()
    assert post.headers["x-contextmesh-signature-256"] == f"sha256={expected}"
    assert post.headers["x-contextmesh-delivery"] == f"notify:{job_id}"
    assert post.headers["x-contextmesh-event"] == "job.ended"
    assert post.headers["content-type"] == "application/json"
    summary = json.loads(post.body)
    assert summary["jobId"] == job_id
    assert summary["user"] == user
    assert summary["state"] == "JOB_STATE_DONE"
    assert (summary["total"], summary["synced"], summary["unchanged"], summary["failed"]) == (
        5,
        3,
        1,
        1,
    )
    assert summary["bundleHash"] == "ab" * 32
    assert summary["training"]["state"] == "TRAINING_STATE_PUBLISHED"
    assert summary["errorReason"] == ""
    assert summary["endTime"] == "2027-01-15T08:01:30Z"


async def test_a_failed_job_reports_why(
    handler: NotifyHandler,
    jobs: JobStore,
    callbacks: CallbackStore,
    receiver: CallbackServer,
    user: str,
) -> None:
    job_id = new_job_id()
    await jobs.create(done_job(job_id, user))
    await callbacks.set(user, receiver.url())
    await jobs.update(job_id, lambda r: _fail(r, "GitHub has no user or organisation"))

    await handler.handle(task_for(job_id, user), FirstDelivery())

    summary = json.loads(receiver.received[0].body)
    assert summary["state"] == "JOB_STATE_FAILED"
    assert summary["errorReason"] == "USER_NOT_FOUND"
    assert summary["errorMessage"] == "GitHub has no user or organisation"


def _fail(record: job_record_pb2.JobRecord, message: str) -> bool:
    record.job.ClearField("bundle")
    end_with_error(
        record.job, job_pb2.JOB_STATE_FAILED, message, code=job_pb2.ERROR_CODE_USER_NOT_FOUND
    )
    return True


async def test_a_job_that_has_not_ended_sends_nothing(
    handler: NotifyHandler,
    jobs: JobStore,
    callbacks: CallbackStore,
    receiver: CallbackServer,
    user: str,
) -> None:
    job_id = new_job_id()
    record = done_job(job_id, user)
    record.job.state = job_pb2.JOB_STATE_TRAINING
    await jobs.create(record)
    await callbacks.set(user, receiver.url())

    await handler.handle(task_for(job_id, user), FirstDelivery())

    assert receiver.received == []


async def test_a_user_without_a_callback_gets_nothing(
    handler: NotifyHandler, jobs: JobStore, receiver: CallbackServer, user: str
) -> None:
    job_id = new_job_id()
    await jobs.create(done_job(job_id, user))

    await handler.handle(task_for(job_id, user), FirstDelivery())

    assert receiver.received == []


async def test_a_non_2xx_answer_fails_the_attempt(
    handler: NotifyHandler, jobs: JobStore, callbacks: CallbackStore, user: str
) -> None:
    job_id = new_job_id()
    await jobs.create(done_job(job_id, user))
    with CallbackServer(statuses=[503]) as receiver:
        await callbacks.set(user, receiver.url())
        with pytest.raises(CallbackFailed, match="answered 503"):
            await handler.handle(task_for(job_id, user), FirstDelivery())


async def test_a_redirect_fails_the_attempt_and_is_not_followed(
    handler: NotifyHandler, jobs: JobStore, callbacks: CallbackStore, user: str
) -> None:
    job_id = new_job_id()
    await jobs.create(done_job(job_id, user))
    with (
        CallbackServer() as elsewhere,
        CallbackServer(statuses=[307], location=elsewhere.url("/inside")) as receiver,
    ):
        await callbacks.set(user, receiver.url())
        with pytest.raises(CallbackFailed, match="307, a redirect"):
            await handler.handle(task_for(job_id, user), FirstDelivery())
        assert len(receiver.received) == 1
        assert elsewhere.received == []


@pytest.mark.parametrize(
    ("url", "addresses", "why"),
    [
        ("https://hooks.example.com/cm", ["10.1.2.3"], "10.1.2.3 is a private"),
        ("https://hooks.example.com/cm", ["93.184.216.34", "169.254.169.254"], "link-local"),
        ("https://hooks.example.com/cm", ["127.0.0.1"], "127.0.0.1 is a loopback"),
        ("http://localhost:9/cm", ["192.168.1.20"], "192.168.1.20 is a private"),
    ],
)
async def test_an_address_outside_the_rules_at_send_time_parks_at_once(
    jobs: JobStore,
    callbacks: CallbackStore,
    user: str,
    url: str,
    addresses: list[str],
    why: str,
) -> None:
    job_id = new_job_id()
    await jobs.create(done_job(job_id, user))
    await callbacks.set(user, url)  # accepted: the host is a name, or loopback
    sender = CallbackSender(resolver=resolving_to(*addresses))
    try:
        with pytest.raises(PermanentError, match=why):
            await NotifyHandler(jobs, callbacks, sender).handle(
                task_for(job_id, user), FirstDelivery()
            )
    finally:
        await sender.close()


async def test_the_system_resolver_answers_for_loopback() -> None:
    assert {str(a) for a in await resolve("127.0.0.1", 80)} == {"127.0.0.1"}


async def test_a_failing_receiver_is_retried_then_parked(
    nc: Client,
    js: JetStreamContext,
    jobs: JobStore,
    callbacks: CallbackStore,
    user: str,
) -> None:
    job_id = new_job_id()
    await jobs.create(done_job(job_id, user))
    sender = CallbackSender()
    stream = work_stream(NOTIFY, TIMING)
    stop = asyncio.Event()
    with CallbackServer(statuses=[500]) as receiver:
        await callbacks.set(user, receiver.url())
        worker = Worker(nc, js, stream, NotifyHandler(jobs, callbacks, sender))
        running = asyncio.create_task(worker.run(stop))
        try:
            await publish_task(
                js, NOTIFY.subject, task_for(job_id, user), msg_id=notify_msg_id(job_id)
            )
            letter = await _parked(js)
        finally:
            stop.set()
            await running
            await sender.close()
        posts = receiver.received

    assert len(posts) == stream.max_deliver == 3
    assert {p.headers["x-contextmesh-delivery"] for p in posts} == {f"notify:{job_id}"}
    assert letter.job_id == job_id
    assert "answered 500" in letter.reason
    assert letter.deliveries == 3


async def _parked(js: JetStreamContext, timeout_s: float = 10.0) -> task_pb2.DeadLetter:
    async with asyncio.timeout(timeout_s):
        while (await js.stream_info(DEADLETTER)).state.messages == 0:  # noqa: ASYNC110 (polls NATS)
            await asyncio.sleep(0.05)
    stored = await js.get_last_msg(DEADLETTER, "contextmesh.deadletter.NOTIFY")
    return task_pb2.DeadLetter.FromString(stored.data or b"")
