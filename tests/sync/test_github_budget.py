"""GitHub budgets shared by sync replicas through KV (a real nats-server), and the concurrency
split that follows the replicas alive.

Two GithubSources on one credential stand for two replicas: each has its own limiter, as two
processes would, and only the bucket joins them."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from meshkit.topology import Bucket, Buckets
from syncsvc.replicas import LiveReplicas
from syncsvc.sources.base import RepoListing, SourceError
from syncsvc.sources.github import GithubSource
from syncsvc.sources.github_budget import BudgetState, SharedBudget, merge
from syncsvc.sources.github_credentials import CredentialStore, credential_id
from tests.support.fake_github import FakeGithub
from tests.support.polling import until
from tests.sync.conftest import FAST_GITHUB_PACING

MakeSource = Callable[..., GithubSource]
CAP = 1024 * 1024
# Every slot reads the shared view: the tests see what each replica knew at each request.
SHARING = replace(FAST_GITHUB_PACING, share_every_s=0.0)


@pytest.fixture
async def budgets(js: JetStreamContext) -> KeyValue:
    return await js.key_value(Buckets.GITHUB_BUDGETS.name)


@pytest.fixture
def token() -> str:
    """A token of the test's own, so its budget key is its own on the module's server."""
    return f"ghp_{secrets.token_hex(18)}"


def world(gh: FakeGithub, token: str, repos: int = 2) -> list[RepoListing]:
    gh.token = token
    gh.add_user("octo")
    for i in range(repos):
        gh.add_repo(f"octo/r{i}", {"README.md": f"# r{i}", ".repo-context.json": "{}"})
    return [RepoListing(full_name=f"octo/r{i}", fingerprint="f") for i in range(repos)]


async def fetch(source: GithubSource, listing: RepoListing, user: str = "octo") -> None:
    await source.fetch(listing, extra_files=(), max_file_bytes=CAP, user=user)


# -- merging what replicas saw ------------------------------------------------------------


def test_within_a_window_the_lower_remaining_wins_whoever_writes_last() -> None:
    assert merge(BudgetState(10, 100.0), BudgetState(40, 100.0)).remaining == 10
    assert merge(BudgetState(40, 100.0), BudgetState(10, 100.0)).remaining == 10


def test_a_later_reset_starts_a_new_window_and_an_earlier_one_is_stale() -> None:
    assert merge(BudgetState(3, 100.0), BudgetState(4990, 200.0)) == BudgetState(4990, 200.0)
    assert merge(BudgetState(4990, 200.0), BudgetState(3, 100.0)) == BudgetState(4990, 200.0)


def test_a_pause_only_grows() -> None:
    merged = merge(BudgetState(5, 100.0, paused_until=50.0), BudgetState(paused_until=40.0))
    assert merged == BudgetState(5, 100.0, paused_until=50.0)
    assert merge(BudgetState(), BudgetState(paused_until=60.0)).paused_until == 60.0


# -- two replicas on one credential -------------------------------------------------------


async def test_a_secondary_limit_one_replica_meets_pauses_the_other(
    fake_github: FakeGithub, make_github_source: MakeSource, budgets: KeyValue, token: str
) -> None:
    one, two = world(fake_github, token)
    fake_github.secondary_limit(retry_after=0.5, repo="octo/r0", path="readme")
    first = make_github_source(token=token, pacing=SHARING, budgets=budgets)
    second = make_github_source(token=token, pacing=SHARING, budgets=budgets)
    shared = SharedBudget(budgets, credential_id(token))

    hit = asyncio.create_task(fetch(first, one))

    async def paused() -> bool:
        seen = await shared.read()
        return seen is not None and seen.paused_until > 0

    await until(paused, what="the first replica to publish its pause")
    await fetch(second, two)
    await hit

    throttled = fake_github.requests(status=403)[0]
    others = fake_github.requests(repo="octo/r1")
    assert len(others) == 2
    assert all(r.started >= throttled.finished + 0.4 for r in others)


async def test_the_budget_one_replica_spent_holds_back_the_other(
    fake_github: FakeGithub, make_github_source: MakeSource, budgets: KeyValue, token: str
) -> None:
    one, two = world(fake_github, token)
    fake_github.set_rate_limit(2, window_s=3600)
    first = make_github_source(token=token, pacing=SHARING, budgets=budgets, rate_limit_reserve=0)
    second = make_github_source(token=token, pacing=SHARING, budgets=budgets, rate_limit_reserve=0)
    await fetch(first, one)  # spends both requests of the hour

    # The second replica never saw a header itself; the bucket tells it nothing is left.
    with pytest.raises(SourceError) as caught:
        await fetch(second, two)

    assert caught.value.retry_after_s is not None and caught.value.retry_after_s > 3000
    assert fake_github.count() == 2  # it sent nothing
    assert fake_github.count(status=403) == 0


async def test_a_budget_below_the_reserve_is_spread_over_both_replicas(
    fake_github: FakeGithub, make_github_source: MakeSource, budgets: KeyValue, token: str
) -> None:
    listings = world(fake_github, token, repos=3)
    fake_github.set_rate_limit(10, window_s=4)
    first = make_github_source(token=token, pacing=SHARING, budgets=budgets, rate_limit_reserve=50)
    second = make_github_source(token=token, pacing=SHARING, budgets=budgets, rate_limit_reserve=50)
    await fetch(first, listings[0])  # learns (and shares) 8 left of a window ending soon
    started = asyncio.get_running_loop().time()

    await fetch(second, listings[1])
    await fetch(first, listings[2])

    # Below the reserve every request waits its even part of what is left of the window:
    # the second replica paced itself by what the first one saw, not from a full budget.
    assert asyncio.get_running_loop().time() - started > 0.8
    assert fake_github.count(status=403) == 0


async def test_each_credential_has_its_own_entry_and_no_token_is_in_the_bucket(
    fake_github: FakeGithub,
    make_github_source: MakeSource,
    budgets: KeyValue,
    token: str,
    tmp_path: Path,
) -> None:
    [one] = world(fake_github, token, repos=1)
    own = f"ghp_{secrets.token_hex(18)}"
    fake_github.add_user_token(own, "octo")
    fake_github.add_user("other")
    fake_github.add_repo("other/site", {"README.md": "# site"})
    folder = tmp_path / "credentials"
    folder.mkdir()
    (folder / "octo").write_text(own)
    source = make_github_source(
        token=token, pacing=SHARING, budgets=budgets, credentials=CredentialStore(token, folder)
    )

    await fetch(source, one, user="octo")
    await fetch(source, RepoListing(full_name="other/site", fingerprint="f"), user="other")

    keys = set(await budgets.keys())
    assert {credential_id(own), credential_id(token)} <= keys
    octo = await SharedBudget(budgets, credential_id(own)).read()
    shared = await SharedBudget(budgets, credential_id(token)).read()
    assert octo is not None and octo.remaining == fake_github.rate_remaining(own)
    assert shared is not None and shared.remaining == fake_github.rate_remaining()
    for key in keys:
        entry = await budgets.get(key)
        stored = key.encode() + (entry.value or b"")
        assert token.encode() not in stored and own.encode() not in stored


# -- the concurrency split follows the live replicas --------------------------------------


@pytest.fixture
async def replica_bucket(js: JetStreamContext) -> Bucket:
    """A heartbeat bucket of the test's own whose keys expire after a second."""
    bucket = Bucket(f"test_replicas_{secrets.token_hex(4)}", 1, 1.0, "test heartbeats")
    await js.create_key_value(
        KeyValueConfig(bucket=bucket.name, history=1, ttl=bucket.ttl_s, storage=StorageType.FILE)
    )
    return bucket


async def test_the_split_grows_when_a_replicas_heartbeat_lapses(
    js: JetStreamContext, replica_bucket: Bucket
) -> None:
    mine = LiveReplicas(js, replica_bucket)
    other = LiveReplicas(js, replica_bucket)
    await other.beat()
    assert await mine.beat() == 2
    assert mine.share(80) == 40

    # The other replica hangs: it beats no more, and its key expires.
    async def alone() -> bool:
        return await mine.beat() == 1

    await until(alone, what="the silent replica's key to expire")
    assert mine.share(80) == 80


async def test_a_replica_that_stops_leaves_at_once(
    js: JetStreamContext, replica_bucket: Bucket
) -> None:
    mine = LiveReplicas(js, replica_bucket)
    other = LiveReplicas(js, replica_bucket)
    stop = asyncio.Event()
    running = asyncio.create_task(other.run(stop))
    await until(lambda: other.count >= 1, what="the other replica's first beat")
    assert await mine.beat() == 2

    stop.set()
    await running

    assert await mine.beat() == 1


async def test_requests_in_flight_follow_the_live_split(
    fake_github: FakeGithub,
    make_github_source: MakeSource,
    js: JetStreamContext,
    replica_bucket: Bucket,
    token: str,
) -> None:
    listings = world(fake_github, token, repos=8)
    fake_github.latency_s = 0.05
    mine = LiveReplicas(js, replica_bucket)
    other = LiveReplicas(js, replica_bucket)
    await other.beat()
    await mine.beat()
    source = make_github_source(token=token, concurrency=8, in_flight=lambda: mine.share(8))

    await asyncio.gather(*(fetch(source, r) for r in listings))
    assert fake_github.max_in_flight == 4  # half of 8 while two replicas live

    async def alone() -> bool:
        return await mine.beat() == 1

    await until(alone, what="the other replica's key to expire")
    fake_github.reset_log()
    for listing in listings:
        fake_github.change_file(listing.full_name, "README.md", "# changed")
    await asyncio.gather(*(fetch(source, r) for r in listings))
    assert fake_github.max_in_flight == 8
