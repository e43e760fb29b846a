"""Shared by the in-process handler tests: a nats-server of the test's own, the filesystem
blob store, fixture repositories for the local source, and reading or taking the tasks a
handler published.

Handlers are called directly (`handler.handle(task, delivery)`), as the worker would. The
tasks they publish are read back from the work streams, which is why each test gets its own
nats-server: a shared one would still hold the tasks of the tests before it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from contextmesh.job.v1 import job_pb2, job_record_pb2
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.js import JetStreamContext

from meshctl.nats_server import NatsServer
from meshkit.blob import BlobStore, FilesystemBlobStore
from meshkit.config import NatsSettings
from meshkit.jobs import JobStore
from meshkit.nats_client import connect
from meshkit.publish import MSG_ID_HEADER
from meshkit.topology import WorkStream, declare
from meshkit.worker import Delivery

__all__ = [
    "RepoFolders",
    "delivery",
    "fs_blobs",
    "new_user",
    "own_connection",
    "published",
    "run_tasks",
    "syncing_job",
]

T = TypeVar("T", bound=Message)


@pytest.fixture(name="connection")
async def own_connection(
    fresh_nats: NatsServer,
) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    """Overrides the root conftest's `connection` where imported: `nc` and `js` reach a
    nats-server of the test's own, the topology declared."""
    nc, js = await connect(NatsSettings(url=fresh_nats.url), name="inproc-tests")
    await declare(js)
    yield nc, js
    await nc.drain()


@pytest.fixture(name="blobs")
async def fs_blobs(tmp_path: Path) -> AsyncIterator[BlobStore]:
    """The filesystem blob store under the test's tmp_path, closed after the test."""
    store = FilesystemBlobStore(tmp_path / "blobs")
    yield store
    await store.close()


def new_user() -> str:
    """A user name of the test's own (a valid GitHub name, as the local source requires)."""
    return f"u{uuid.uuid4().hex[:12]}"


class RepoFolders:
    """Repositories of the local source (`root/<user>/<name>/`), written as a test needs them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, user: str, name: str, *, description: str, readme: str | None = None) -> Path:
        """A plain folder with a .repo-context.json and, when given, a README.md."""
        folder = self.root / user / name
        folder.mkdir(parents=True, exist_ok=True)
        context = {
            "project_identity": {"name": name, "type": "project", "description": description},
            "tech_stack": {"primary": ["Python"]},
        }
        (folder / ".repo-context.json").write_text(json.dumps(context), "utf-8")
        if readme is not None:
            (folder / "README.md").write_text(readme, "utf-8")
        return folder


def delivery(attempt: int = 1, max_deliver: int = 5) -> Delivery:
    """A delivery for a handler called directly: no message behind it."""
    return Delivery(msg=None, attempt=attempt, max_deliver=max_deliver)  # type: ignore[arg-type]


async def syncing_job(jobs: JobStore, user: str, total: int, job_id: str) -> None:
    """A job record as discovery leaves it: SYNCING, `total` repositories, none counted."""
    record = job_record_pb2.JobRecord(
        job=job_pb2.Job(id=job_id, user=user, state=job_pb2.JOB_STATE_SYNCING, total=total),
        counted=bytes((total + 7) // 8),
    )
    record.job.create_time.GetCurrentTime()
    await jobs.create(record)


async def published(js: JetStreamContext, ws: WorkStream, kind: type[T]) -> list[tuple[str, T]]:
    """Every task waiting in a work stream, oldest first, with its Nats-Msg-Id; the stream
    keeps them."""
    state = (await js.stream_info(ws.stream)).state
    tasks: list[tuple[str, T]] = []
    if not state.messages:
        return tasks
    for seq in range(state.first_seq, state.last_seq + 1):
        msg = await js.get_msg(ws.stream, seq)
        task = kind()
        task.ParseFromString(msg.data or b"")
        tasks.append(((msg.headers or {}).get(MSG_ID_HEADER, ""), task))
    return tasks


async def run_tasks(
    js: JetStreamContext,
    ws: WorkStream,
    kind: type[T],
    handle: Callable[[T, Delivery], Awaitable[Any]],
) -> int:
    """Take every task now waiting in a work stream through its durable consumer, call
    `handle` on each as a worker would, and ack it; return how many were handled."""
    sub = await js.pull_subscribe(ws.subject, durable=ws.consumer, stream=ws.stream)
    handled = 0
    try:
        while (await js.stream_info(ws.stream)).state.messages:
            for msg in await sub.fetch(batch=64, timeout=2):
                task = kind()
                task.ParseFromString(msg.data)
                await handle(task, Delivery(msg, msg.metadata.num_delivered, ws.max_deliver))
                await msg.ack_sync()
                handled += 1
    finally:
        await sub.unsubscribe()
    return handled
