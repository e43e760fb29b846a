"""GitHub webhooks in-process: WebhookService behind the project's interceptors (no bearer
token: the signature authenticates) on a nats-server of the test's own, and pending refreshes
fired on a clock the test moves."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from contextmesh.gateway.v1 import webhook_service_pb2 as pb
from contextmesh.gateway.v1 import webhook_service_pb2_grpc
from contextmesh.job.v1 import job_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from google.api import httpbody_pb2

from gateway.access import PUBLIC_RULES, WEBHOOK_SERVICE
from gateway.github_events import MAX_BODY_BYTES
from gateway.pending import PendingRefreshes
from gateway.webhook_service import WebhookService
from meshkit.rpc import create_server
from meshkit.signing import LocalSigner
from meshkit.topology import DISCOVER, Buckets
from tests.gateway.conftest import Gateway
from tests.support.auth import authenticator_for
from tests.support.inproc import published

Code = grpc.StatusCode
Outcome = pb.WebhookOutcome
SECRET = "It's a Secret to Everybody"
WINDOW_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def push_body(user: str, name: str, owner: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "ref": "refs/heads/main",
        "repository": {
            "full_name": f"{user}/{name}",
            "name": name,
            "owner": owner or {"login": user},
        },
    }


def signed(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Hooks:
    gateway: Gateway
    pending: PendingRefreshes
    clock: Clock
    stub: webhook_service_pb2_grpc.WebhookServiceStub

    def gateways(self, count: int) -> list[PendingRefreshes]:
        """Other gateways' pending refreshes over the same buckets."""
        return [
            PendingRefreshes(
                self.pending.deliveries,
                self.pending.pending,
                self.gateway.refresher,
                debounce_s=WINDOW_S,
                clock=self.clock,
                idle_s=0.05,
            )
            for _ in range(count)
        ]

    async def send(
        self,
        event: str,
        body: dict[str, Any] | bytes,
        *,
        delivery: str | None = None,
        signature: str | None = "good",
    ) -> pb.ReceiveGithubWebhookResponse:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        metadata = [("x-github-event", event), ("x-github-delivery", delivery or str(uuid.uuid4()))]
        if signature is not None:
            wrong = signature == "wrong-secret"
            good = signature == "good" or wrong
            signature = signed(data, "another secret" if wrong else SECRET) if good else signature
            metadata.append(("x-hub-signature-256", signature))
        answer: pb.ReceiveGithubWebhookResponse = await self.stub.ReceiveGithubWebhook(
            pb.ReceiveGithubWebhookRequest(
                body=httpbody_pb2.HttpBody(content_type="application/json", data=data)
            ),
            metadata=metadata,
            timeout=10,
        )
        return answer

    async def pending_of(self, user: str) -> list[str] | None:
        found = await self.pending._get(user)
        return None if found is None else list(found[0].resync)


async def serve(gateway: Gateway, signer: LocalSigner, secret: str | None) -> AsyncIterator[Hooks]:
    clock = Clock()
    pending = PendingRefreshes(
        await gateway.js.key_value(Buckets.DELIVERIES.name),
        await gateway.js.key_value(Buckets.PENDING.name),
        gateway.refresher,
        debounce_s=WINDOW_S,
        clock=clock,
        idle_s=0.05,
    )
    server = create_server(
        "127.0.0.1:0",
        [
            (
                webhook_service_pb2_grpc.add_WebhookServiceServicer_to_server,
                WebhookService(secret, pending),
                WEBHOOK_SERVICE,
            )
        ],
        auth=authenticator_for(signer),
        rules=PUBLIC_RULES,
        max_receive_bytes=4 * MAX_BODY_BYTES,
    )
    await server.server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Hooks(gateway, pending, clock, webhook_service_pb2_grpc.WebhookServiceStub(channel))
    finally:
        await channel.close()
        await server.server.stop(grace=None)


@pytest.fixture
async def hooks(gateway: Gateway, signer: LocalSigner) -> AsyncIterator[Hooks]:
    async for served in serve(gateway, signer, SECRET):
        yield served


async def refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def discover_tasks(gateway: Gateway, user: str) -> list[sync_tasks.DiscoverTask]:
    return [
        t
        for _, t in await published(gateway.js, DISCOVER, sync_tasks.DiscoverTask)
        if t.user == user
    ]


async def keys(gateway: Gateway, bucket: str) -> list[str]:
    kv = await gateway.js.key_value(bucket)
    try:
        return list(await kv.keys())
    except Exception:  # nats-py raises NoKeysError for an empty bucket
        return []


async def test_a_signed_push_is_accepted_without_a_bearer_token(hooks: Hooks, user: str) -> None:
    answer = await hooks.send("push", push_body(user, "alpha"))

    assert answer.outcome == Outcome.WEBHOOK_OUTCOME_ACCEPTED and answer.user == user
    assert f"{user}/alpha" in answer.message
    assert await hooks.pending_of(user) == [f"{user}/alpha"]


@pytest.mark.parametrize(
    ("signature", "says"),
    [
        (None, "missing X-Hub-Signature-256"),
        ("sha256=" + "0" * 64, "does not match"),
        ("sha1=abc", "does not match"),
        ("wrong-secret", "does not match"),
    ],
    ids=["missing", "bad", "malformed", "wrong-secret"],
)
async def test_a_bad_signature_is_401_and_starts_nothing(
    hooks: Hooks, user: str, signature: str | None, says: str
) -> None:
    error = await refused(hooks.send("push", push_body(user, "alpha"), signature=signature))

    assert error.code() == Code.UNAUTHENTICATED and says in (error.details() or "")
    assert SECRET not in (error.details() or "")
    assert await hooks.pending_of(user) is None
    assert await keys(hooks.gateway, Buckets.DELIVERIES.name) == []


async def test_without_a_secret_the_endpoint_is_404(gateway: Gateway, signer: LocalSigner) -> None:
    async for off in serve(gateway, signer, None):
        error = await refused(off.send("ping", {"zen": "hi"}))
        assert error.code() == Code.NOT_FOUND
        assert "CONTEXTMESH_GITHUB_WEBHOOK_SECRET" in (error.details() or "")


@pytest.mark.parametrize(
    ("event", "body", "delivery", "says"),
    [
        ("push", b"x" * (MAX_BODY_BYTES + 1), None, f"over {MAX_BODY_BYTES} bytes"),
        ("push", b"{not json", None, "not JSON"),
        ("push", b"[1, 2]", None, "JSON object"),
        ("push", {"repository": {"full_name": "a/b"}}, None, "neither 'login' nor 'name'"),
        ("push", push_body("bad_name!", "x"), None, "GitHub user or organisation name"),
        ("push", push_body("octo", "x", {"login": "other"}), None, "owner/name"),
        ("push", push_body("octo", "x"), "../../etc", "X-GitHub-Delivery"),
        ("", push_body("octo", "x"), None, "X-GitHub-Event is missing"),
    ],
    ids=[
        "oversized",
        "not-json",
        "not-object",
        "no-owner",
        "bad-owner",
        "other-owner",
        "bad-delivery",
        "no-event",
    ],
)
async def test_a_malformed_delivery_is_400_saying_what_is_wrong(
    hooks: Hooks, event: str, body: dict[str, Any] | bytes, delivery: str | None, says: str
) -> None:
    error = await refused(hooks.send(event, body, delivery=delivery))

    assert error.code() == Code.INVALID_ARGUMENT and says in (error.details() or "")
    assert await keys(hooks.gateway, Buckets.PENDING.name) == []


@pytest.mark.parametrize(
    ("event", "action", "outcome", "resyncs"),
    [
        ("push", None, Outcome.WEBHOOK_OUTCOME_ACCEPTED, True),
        *[
            ("repository", action, Outcome.WEBHOOK_OUTCOME_ACCEPTED, False)
            for action in ("created", "deleted", "renamed", "publicized", "privatized")
        ],
        ("repository", "edited", Outcome.WEBHOOK_OUTCOME_IGNORED, None),
        ("ping", None, Outcome.WEBHOOK_OUTCOME_PONG, None),
        ("issues", "opened", Outcome.WEBHOOK_OUTCOME_IGNORED, None),
        ("star", "created", Outcome.WEBHOOK_OUTCOME_IGNORED, None),
    ],
)
async def test_the_event_table(
    hooks: Hooks, user: str, event: str, action: str | None, outcome: int, resyncs: bool | None
) -> None:
    body = push_body(user, "alpha", {"name": user})  # an organisation's owner has a name only
    if action is not None:
        body["action"] = action

    answer = await hooks.send(event, body)

    assert answer.outcome == outcome
    if resyncs is None:
        assert answer.user == "" and await hooks.pending_of(user) is None
        if outcome == Outcome.WEBHOOK_OUTCOME_IGNORED:
            assert answer.message.startswith("ignored")
    else:
        assert answer.user == user
        assert await hooks.pending_of(user) == ([f"{user}/alpha"] if resyncs else [])


async def test_a_redelivered_delivery_starts_nothing(hooks: Hooks, user: str) -> None:
    delivery = str(uuid.uuid4())
    first = await hooks.send("push", push_body(user, "alpha"), delivery=delivery)
    hooks.clock.now += WINDOW_S
    started = await hooks.pending.fire(user)
    assert first.outcome == Outcome.WEBHOOK_OUTCOME_ACCEPTED and started is not None

    again = await hooks.send("push", push_body(user, "alpha"), delivery=delivery)

    assert again.outcome == Outcome.WEBHOOK_OUTCOME_DUPLICATE and "received before" in again.message
    assert await hooks.pending_of(user) is None
    assert [t.meta.job_id for t in await discover_tasks(hooks.gateway, user)] == [started]


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.02)


async def test_ten_pushes_in_a_window_give_one_job_across_three_gateways(
    hooks: Hooks, user: str
) -> None:
    names = [f"{user}/repo-{i % 4}" for i in range(10)]  # four repositories, pushed ten times
    for name in names:
        await hooks.send("push", push_body(user, name.split("/")[1]))
        hooks.clock.now += 0.5
    stop = asyncio.Event()
    loops = [asyncio.create_task(g.run(stop)) for g in hooks.gateways(3)]
    try:
        await asyncio.sleep(0.3)
        assert await discover_tasks(hooks.gateway, user) == []  # the window is still open
        hooks.clock.now += WINDOW_S
        await until(lambda: _has_tasks(hooks.gateway, user))
        await asyncio.sleep(0.3)  # time for a second job, were one to start
    finally:
        stop.set()
        await asyncio.gather(*loops)

    tasks = await discover_tasks(hooks.gateway, user)
    assert len(tasks) == 1
    assert sorted(tasks[0].resync) == sorted(set(names))
    record, _ = await hooks.gateway.jobs.get(tasks[0].meta.job_id)
    assert sorted(record.job.resync) == sorted(set(names))
    assert await hooks.pending_of(user) is None


async def _has_tasks(gateway: Gateway, user: str) -> bool:
    return bool(await discover_tasks(gateway, user))


async def test_a_window_that_ends_while_a_job_refreshes_waits_for_it(
    hooks: Hooks, user: str
) -> None:
    running, _ = await hooks.gateway.refresher.refresh(user, force=False)
    await hooks.send("push", push_body(user, "alpha"))
    hooks.clock.now += WINDOW_S

    assert await hooks.pending.fire(user) is None  # not coalesced into the running job
    assert await hooks.pending_of(user) == [f"{user}/alpha"]
    assert [t.meta.job_id for t in await discover_tasks(hooks.gateway, user)] == [running.id]
    await hooks.gateway.jobs.end(
        running.id, job_pb2.JOB_STATE_CANCELLED, "cancelled", code=job_pb2.ERROR_CODE_CANCELLED
    )
    assert await hooks.pending.fire(user) is None  # re-armed a window later
    hooks.clock.now += WINDOW_S

    started = await hooks.pending.fire(user)

    assert started is not None and started != running.id
    tasks = {t.meta.job_id: t for t in await discover_tasks(hooks.gateway, user)}
    assert list(tasks[started].resync) == [f"{user}/alpha"]
