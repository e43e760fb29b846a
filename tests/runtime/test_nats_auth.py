"""Locked-down NATS: a real nats-server on the config meshkit.nats_auth generates.

Each refusal is checked twice: the client's call fails, and the server logged the violation
for that exact subject (so a call that failed for another reason cannot pass the test).
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from gateway.redrive import Redriver
from gateway.refresh import new_record
from meshctl.__main__ import main
from meshctl.nats_server import NatsServer
from meshkit import nats_auth
from meshkit.config import NatsSettings, Settings
from meshkit.domain.ids import new_job_id, sync_msg_id
from meshkit.errors import ConfigError
from meshkit.jobs import JobStore
from meshkit.nats_client import NatsAuthError, connect
from meshkit.topology import (
    DEADLETTER,
    DISCOVER,
    JOB_ENDS,
    MERGE,
    SYNC,
    TRAIN,
    Buckets,
    declare,
)
from meshkit.worker import park
from tests.support.polling import until

SHORT_S = 1.0


@dataclass
class Locked:
    server: NatsServer
    auth_dir: Path
    clients: list[Client] = field(default_factory=list)

    def settings(self, name: str) -> NatsSettings:
        return NatsSettings(
            url=self.server.url,
            nkey_seed_file=str(nats_auth.seed_path(self.auth_dir, name)),
            user=name,
        )

    async def connect_as(self, name: str) -> tuple[Client, JetStreamContext, list[str]]:
        """A client with the identity's seed; returns the errors the server pushed to it."""
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(
            self.server.url,
            nkeys_seed=str(nats_auth.seed_path(self.auth_dir, name)),
            inbox_prefix=nats_auth.inbox_prefix(name),
            error_cb=on_error,
            allow_reconnect=False,
        )
        self.clients.append(nc)
        return nc, nc.jetstream(timeout=SHORT_S), errors

    def violations(self) -> str:
        return "\n".join(
            line for line in self.server.log_tail(200_000).splitlines() if "Violation" in line
        )


@pytest.fixture
def locked_server(tmp_path: Path) -> Iterator[tuple[NatsServer, Path]]:
    auth_dir = tmp_path / "auth"
    keys = nats_auth.generate(auth_dir)
    server = NatsServer(tmp_path / "nats", authorization=nats_auth.authorization_block(keys))
    server.start()
    yield server, auth_dir
    server.stop()


@pytest.fixture
async def locked(locked_server: tuple[NatsServer, Path]) -> AsyncIterator[Locked]:
    server, auth_dir = locked_server
    mesh = Locked(server, auth_dir)
    nc, _js, _ = await mesh.connect_as(nats_auth.ADMIN)
    await declare(nc.jetstream(timeout=10))
    yield mesh
    for client in mesh.clients:
        await client.close()


async def refused(mesh: Locked, errors: list[str], subject: str, call: object) -> None:
    """The awaitable fails, the client was told why, and the server logged the subject."""
    with pytest.raises((nats.errors.TimeoutError, asyncio.TimeoutError)):
        await call  # type: ignore[misc]
    assert any("permissions violation" in e and subject.lower() in e.lower() for e in errors)
    assert f'Violation - Subject "{subject}"' in mesh.violations()


def pointer(user: str, job_id: str) -> bytes:
    return bundle_pb2.BundlePointer(
        bundle=job_pb2.BundleRef(
            content_hash="ab" * 32, blob_key=f"bundles/{user}/{'ab' * 32}.json"
        ),
        index_key=f"bundles/{user}/{'ab' * 32}/{job_id}.index.binpb",
        job_id=job_id,
    ).SerializeToString()


async def test_anonymous_clients_are_refused(locked: Locked) -> None:
    anonymous = Client()
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await anonymous.connect(locked.server.url, allow_reconnect=False, connect_timeout=2)
    await anonymous.close()
    # The services' own connect says which setting to look at instead of retrying forever.
    with pytest.raises(NatsAuthError, match="CONTEXTMESH_NATS_NKEY_SEED_FILE") as caught:
        await asyncio.wait_for(connect(NatsSettings(url=locked.server.url), name="x"), 10)
    assert isinstance(caught.value, ConfigError)


async def test_a_key_the_server_does_not_know_is_refused(locked: Locked, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    nats_auth.generate(stranger, ["gateway"])  # a fresh seed, not in the server's config
    settings = NatsSettings(
        url=locked.server.url, nkey_seed_file=str(nats_auth.seed_path(stranger, "gateway"))
    )
    with pytest.raises(NatsAuthError, match="does not accept this key"):
        await asyncio.wait_for(connect(settings, name="gateway"), 10)


async def test_a_sync_worker_cannot_move_pointers_or_publish_training(locked: Locked) -> None:
    _nc, js, errors = await locked.connect_as("syncsvc")
    bundles = await js.key_value(Buckets.BUNDLES.name)
    await refused(locked, errors, "$KV.cm_bundles.bob", bundles.put("bob", pointer("bob", "1")))
    await refused(locked, errors, TRAIN.subject, js.publish(TRAIN.subject, b"forged"))
    await refused(locked, errors, "$KV.cm_models.bob", js.publish("$KV.cm_models.bob", b"x"))
    # What it is for still works: read pointers, publish SYNC and MERGE, write outcomes.
    assert (await js.publish(SYNC.subject, b"task", headers={"Nats-Msg-Id": "s1"})).seq > 0
    assert (await js.publish(MERGE.subject, b"task", headers={"Nats-Msg-Id": "m1"})).seq > 0
    outcomes = await js.key_value(Buckets.OUTCOMES.name)
    assert await outcomes.put("job.0", b"outcome") > 0


async def test_a_sync_worker_shares_github_budgets_and_heartbeats_under_its_identity(
    locked: Locked,
) -> None:
    """What syncsvc/sources/github_budget.py and syncsvc/replicas.py do, as syncsvc."""
    from syncsvc.replicas import LiveReplicas
    from syncsvc.sources.github_budget import BudgetState, SharedBudget

    _nc, js, errors = await locked.connect_as("syncsvc")
    budget = SharedBudget(await js.key_value(Buckets.GITHUB_BUDGETS.name), "0123456789abcdef")
    assert await budget.publish(BudgetState(10, 2e9)) == BudgetState(10, 2e9)
    assert await budget.publish(BudgetState(4, 2e9)) == BudgetState(4, 2e9)  # a CAS update
    assert await budget.read() == BudgetState(4, 2e9)
    replicas = LiveReplicas(js)
    assert await replicas.beat() == 1
    stop = asyncio.Event()
    stop.set()
    await replicas.run(stop)  # beats once more, then purges its key on the way out
    assert not errors
    # Nobody else may forge a budget: a pause written by the gateway would stop every sync.
    _, gateway_js, gateway_errors = await locked.connect_as("gateway")
    subject = f"$KV.{Buckets.GITHUB_BUDGETS.name}.0123456789abcdef"
    await refused(locked, gateway_errors, subject, gateway_js.publish(subject, b"{}"))


async def test_the_gateway_cannot_write_pointers_nor_publish_work_but_discovery(
    locked: Locked,
) -> None:
    nc, js, errors = await locked.connect_as("gateway")
    bundles = await js.key_value(Buckets.BUNDLES.name)
    await refused(locked, errors, "$KV.cm_bundles.bob", bundles.put("bob", pointer("bob", "1")))
    for subject in (SYNC.subject, MERGE.subject, TRAIN.subject):
        await refused(locked, errors, subject, js.publish(subject, b"forged"))
    dead = f"$JS.API.STREAM.MSG.DELETE.{DEADLETTER}"
    await refused(locked, errors, dead, nc.request(dead, b'{"seq":1}', timeout=SHORT_S))
    assert (await js.publish(DISCOVER.subject, b"task", headers={"Nats-Msg-Id": "d1"})).seq > 0
    jobs = await js.key_value(Buckets.JOBS.name)
    assert await jobs.create("01JOB", b"record") > 0


async def test_the_pointer_overwrite_attack_is_refused_to_every_service(locked: Locked) -> None:
    # The attack: overwrite bob's pointer with alice's bundle, or with a future job id that
    # bob's refreshes would never replace; and list the streams to find the buckets.
    for name in ("gateway", "syncsvc", "trainsvc", "searchsvc", nats_auth.OPS):
        nc, js, errors = await locked.connect_as(name)
        bundles = await js.key_value(Buckets.BUNDLES.name) if name != nats_auth.OPS else None
        attack = pointer("alice", "ZZZZZZZZZZZZZZZZZZZZZZZZZZ")
        if bundles is not None:
            await refused(locked, errors, "$KV.cm_bundles.bob", bundles.put("bob", attack))
        else:
            await refused(locked, errors, "$KV.cm_bundles.bob", js.publish("$KV.cm_bundles.bob"))
        names = "$JS.API.STREAM.NAMES"
        await refused(locked, errors, names, nc.request(names, b"{}", timeout=SHORT_S))
    # Only mergesvc moves bundle pointers, only trainsvc model pointers.
    _, js, _ = await locked.connect_as("mergesvc")
    assert await (await js.key_value(Buckets.BUNDLES.name)).put("bob", pointer("bob", "1")) > 0
    _, js, errors = await locked.connect_as("trainsvc")
    assert await (await js.key_value(Buckets.MODELS.name)).put("bob", b"model") > 0


async def test_search_reads_both_pointer_buckets_and_writes_neither(locked: Locked) -> None:
    _, js, errors = await locked.connect_as("searchsvc")
    for bucket in (Buckets.BUNDLES, Buckets.MODELS):
        kv = await js.key_value(bucket.name)
        with pytest.raises(KeyNotFoundError):  # an answer, not a refusal (that times out)
            await kv.get("nobody")
        subject = f"$KV.{bucket.name}.bob"
        await refused(locked, errors, subject, kv.put("bob", b"x"))


async def test_the_notifier_follows_jobs_and_reads_callbacks_but_writes_neither(
    locked: Locked,
) -> None:
    _, js, errors = await locked.connect_as("notifysvc")
    feed = await js.pull_subscribe_bind(durable=JOB_ENDS.consumer, stream=JOB_ENDS.stream)
    with pytest.raises(nats.errors.TimeoutError):
        await feed.fetch(1, timeout=SHORT_S)  # nothing ended yet: an empty answer, no refusal
    assert not errors
    for bucket in (Buckets.JOBS, Buckets.CALLBACKS):
        kv = await js.key_value(bucket.name)
        with pytest.raises(KeyNotFoundError):  # an answer, not a refusal (that times out)
            await kv.get("nobody")
        await refused(locked, errors, f"$KV.{bucket.name}.bob", kv.put("bob", b"x"))


async def test_a_service_cannot_read_another_services_replies(locked: Locked) -> None:
    nc, _, errors = await locked.connect_as("syncsvc")
    spy = f"{nats_auth.inbox_prefix('gateway')}.>"
    await nc.subscribe(spy)
    await nc.flush()
    # The server's -ERR may arrive after the flush's PONG: wait on it.
    await until(lambda: errors, what="the server's -ERR")
    assert any("permissions violation for subscription" in e for e in errors)

    def logged() -> bool:
        return any(
            "Subscription Violation" in line and spy in line
            for line in locked.violations().splitlines()
        )

    # The server writes its log line on its own schedule.
    await until(logged, what="nats-server's log line of the violation")


async def test_the_ops_identity_lists_and_redrives_dead_letters(locked: Locked) -> None:
    """The real redrive, on the ops identity: it reads the letter, starts a job (cm_redrives,
    cm_jobs, cm_active, DISCOVER) and deletes the letter; it cannot feed a worker directly."""
    _, sync_js, _ = await locked.connect_as("syncsvc")
    job_id = new_job_id()
    task = sync_tasks.SyncRepoTask(
        meta=task_pb2.TaskMeta(job_id=job_id, task_id=sync_msg_id(job_id, 0)),
        user="alice",
        repository="alice/broken",
    )
    # The job exists, as when a worker parks (a letter of a gone job is not kept).
    await (await JobStore.open(sync_js)).create(new_record(job_id, "alice"))
    seq = await park(
        sync_js,
        SYNC,
        payload=task.SerializeToString(),
        stream_seq=1,
        msg_id=task.meta.task_id,
        job_id=job_id,
        reason="RuntimeError: down",
        deliveries=SYNC.max_deliver,
    )
    _, js, errors = await locked.connect_as(nats_auth.OPS)
    assert (await js.stream_info(DEADLETTER)).state.messages == 1
    redriven = await (await Redriver.open(js)).redrive(seq)
    assert redriven.job.redrive.repository == "alice/broken"
    assert (await js.stream_info(DEADLETTER)).state.messages == 0
    await refused(locked, errors, SYNC.subject, js.publish(SYNC.subject, b"x", timeout=1))
    assert "DISCOVER" not in locked.violations() and "KV_cm_redrives" not in locked.violations()


def test_seeds_are_private_kept_across_starts_and_only_public_keys_reach_the_config(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "auth"
    first = nats_auth.generate(folder)
    assert set(first) == {*nats_auth.SERVICES, nats_auth.OPS, nats_auth.ADMIN}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    seeds = {}
    for name in first:
        path = nats_auth.seed_path(folder, name)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        seeds[name] = path.read_text().strip()
        assert seeds[name].startswith("SU")
    assert nats_auth.generate(folder) == first  # a restart keeps every identity
    assert len(set(first.values())) == len(first)
    block = nats_auth.authorization_block(first)
    assert all(key in block for key in first.values())
    assert not any(seed in block for seed in seeds.values())
    server = NatsServer(tmp_path / "nats", authorization=block)
    config = server.write_config()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "authorization {" in config.read_text()


def test_the_declare_command_needs_the_admin_identity(
    locked_server: tuple[NatsServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, auth_dir = locked_server
    monkeypatch.setenv("CONTEXTMESH_NATS_URL", server.url)
    monkeypatch.setenv("CONTEXTMESH_JS_MAX_BYTES", "SYNC=64MiB")

    def as_identity(name: str) -> None:
        monkeypatch.setenv("CONTEXTMESH_NATS_USER", name)
        seed = nats_auth.seed_path(auth_dir, name)
        monkeypatch.setenv("CONTEXTMESH_NATS_NKEY_SEED_FILE", str(seed))

    as_identity("syncsvc")  # a service may not create streams
    with pytest.raises(nats.errors.TimeoutError):
        main(["declare"])
    assert 'Violation - Subject "$JS.API.STREAM.CREATE.DISCOVER"' in server.log_tail(200_000)

    as_identity(nats_auth.ADMIN)
    assert main(["declare"]) == 0

    async def sync_bound() -> int:
        nc, js = await connect(Settings.from_env().nats, name="check")
        try:
            return int((await js.stream_info(SYNC.stream)).config.max_bytes or 0)
        finally:
            await nc.close()

    assert asyncio.run(sync_bound()) == 64 << 20
