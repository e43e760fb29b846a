"""The GitHub client's transport: one client, connections spread over small pools."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from meshkit.config import GithubSettings
from syncsvc.sources.base import MemoryResponseCache
from syncsvc.sources.github import GithubSource
from syncsvc.sources.github_transport import ShardedTransport
from tests.support.fake_github import FakeGithub, populate


def test_pools_are_small_and_cover_the_connections() -> None:
    assert ShardedTransport(80).shards == 10
    assert ShardedTransport(20, shard_size=8).shards == 3
    assert ShardedTransport(1).shards == 1
    with pytest.raises(ValueError):
        ShardedTransport(0)


async def test_concurrent_requests_all_run_at_once_and_give_their_slots_back() -> None:
    with FakeGithub(latency_s=0.2) as gh:
        populate(gh, "octo", 1)
        transport = ShardedTransport(20, shard_size=8)
        async with httpx.AsyncClient(transport=transport, base_url=gh.url) as client:
            answers = await asyncio.gather(*(client.get("/users/octo") for _ in range(20)))
            again = await client.get("/users/octo")

        assert all(a.status_code == 200 for a in [*answers, again])
        assert gh.max_in_flight == 20  # no request waited for a connection
        assert transport._in_flight == [0, 0, 0]


async def test_a_failed_request_gives_its_slot_back() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = ShardedTransport(4, shard_size=2)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")
    assert transport._in_flight == [0, 0]


async def test_a_given_client_is_used_and_left_open(fake_github: FakeGithub) -> None:
    populate(fake_github, "octo", 2)
    async with httpx.AsyncClient() as client:
        source = GithubSource(
            GithubSettings(api_url=fake_github.url),
            concurrency=2,
            cache=MemoryResponseCache(),
            client=client,
        )
        assert len(await source.list_repositories("octo")) == 2
        await source.close()
        assert not client.is_closed
