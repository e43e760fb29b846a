"""Fixtures of the sync tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from nats.js.kv import KeyValue

from meshkit.config import GithubSettings
from meshkit.retry import GITHUB_REQUEST
from syncsvc.sources.base import MemoryResponseCache, ResponseCache
from syncsvc.sources.github import GithubSource
from syncsvc.sources.github_credentials import CredentialStore
from syncsvc.sources.github_limits import GithubPacing
from tests.support.fake_github import FakeGithub

# Waits shortened so that retries and rate-limit tests take fractions of a second.
FAST_GITHUB_PACING = GithubPacing(
    retry=replace(GITHUB_REQUEST, base_delay_s=0.01, max_delay_s=0.05),
    secondary_wait_s=0.1,
    max_wait_s=10.0,
    reset_margin_s=0.05,
)


@pytest.fixture
def fake_github() -> Iterator[FakeGithub]:
    """A GitHub stand-in on a free loopback port, with an empty world."""
    with FakeGithub() as gh:
        yield gh


@pytest.fixture
async def make_github_source(
    fake_github: FakeGithub,
) -> AsyncIterator[Callable[..., GithubSource]]:
    """make(gh=None, *, cache=None, concurrency=8, pacing=FAST, credentials=None,
    budgets=None, in_flight=None, **GithubSettings fields): a GithubSource for `gh`
    (default: fake_github), closed after the test."""
    made: list[GithubSource] = []

    def make(
        gh: FakeGithub | None = None,
        *,
        cache: ResponseCache | None = None,
        concurrency: int = 8,
        pacing: GithubPacing = FAST_GITHUB_PACING,
        credentials: CredentialStore | None = None,
        budgets: KeyValue | None = None,
        in_flight: Callable[[], int] | None = None,
        **settings: Any,
    ) -> GithubSource:
        settings.setdefault("api_url", (gh or fake_github).url)
        settings.setdefault("timeout_s", 5.0)
        settings.setdefault("max_retries", 3)
        source = GithubSource(
            GithubSettings(**settings),
            concurrency=concurrency,
            cache=cache if cache is not None else MemoryResponseCache(),
            pacing=pacing,
            credentials=credentials,
            budgets=budgets,
            in_flight=in_flight,
        )
        made.append(source)
        return source

    yield make
    for source in made:
        await source.close()
