"""syncsvc's ETag cache (KV + blob store) is shared by its workers: what one worker fetched,
another asks for conditionally and GitHub answers 304, at no cost to the rate limit.

Each worker here has what a syncsvc process has: its own NATS connection, its own handle on
the shared blob store, its own SharedResponseCache and GithubSource. Nothing in memory is
shared between them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from meshctl.nats_server import NatsServer
from meshkit.blob import FilesystemBlobStore
from meshkit.config import NatsSettings
from meshkit.nats_client import connect
from meshkit.topology import declare
from syncsvc.http_cache import SharedResponseCache
from syncsvc.sources.base import FetchedRepo
from syncsvc.sources.github import GithubSource
from tests.support.fake_github import FakeGithub, populate

EXTRAS = ("ARCHITECTURE.md", "SKILLS-INDEX.md")
CAP = 1024 * 1024


def contents(repo: FetchedRepo) -> list[tuple[str, bytes | None]]:
    return [(f.path, f.data) for f in (repo.context, repo.readme, *repo.extra)]


@pytest.fixture
async def workers(
    nats_server: NatsServer,
    tmp_path: Path,
    make_github_source: Callable[..., GithubSource],
) -> AsyncIterator[Callable[[], Awaitable[GithubSource]]]:
    """new() -> a GithubSource with a syncsvc process's own connection, store and cache."""
    async with AsyncExitStack() as stack:

        async def new() -> GithubSource:
            nc, js = await connect(NatsSettings(url=nats_server.url), name="syncsvc-test")
            stack.push_async_callback(nc.drain)
            await declare(js)
            blobs = FilesystemBlobStore(tmp_path / "blobs")
            stack.push_async_callback(blobs.close)
            cache = await SharedResponseCache.open(js, blobs)
            return make_github_source(cache=cache)

        yield new


async def test_a_second_worker_asks_conditionally_and_gets_304s(
    fake_github: FakeGithub, workers: Callable[[], Awaitable[GithubSource]]
) -> None:
    populate(fake_github, "octo", 2)
    one = await workers()
    listings = await one.list_repositories("octo")
    first = [
        await one.fetch(listing, extra_files=EXTRAS, max_file_bytes=CAP) for listing in listings
    ]
    assert fake_github.count(status=200) == fake_github.count() > 0
    fake_github.reset_log()

    other = await workers()
    assert sorted(r.full_name for r in await other.list_repositories("octo")) == sorted(
        r.full_name for r in listings
    )
    again = [
        await other.fetch(listing, extra_files=EXTRAS, max_file_bytes=CAP) for listing in listings
    ]
    sent = fake_github.requests()
    assert sent and all(r.if_none_match for r in sent), "every request is conditional"
    assert all(r.status == 304 for r in sent), "and GitHub answers each with 304"
    assert [contents(r) for r in again] == [contents(r) for r in first], (
        "the cached bodies stand in for the 304s"
    )
