"""Build the configured source."""

from __future__ import annotations

from collections.abc import Callable

from nats.js.kv import KeyValue

from meshkit.config import GITHUB_CONCURRENCY_BUDGET, Settings
from meshkit.errors import ConfigError
from syncsvc.sources.base import ResponseCache, Source

__all__ = ["open_source"]


def open_source(
    settings: Settings,
    cache: ResponseCache,
    *,
    budgets: KeyValue | None = None,
    in_flight: Callable[[], int] | None = None,
) -> Source:
    """The configured source. For GitHub: `budgets` shares each credential's rate limit with
    the other replicas, `in_flight` is this replica's part of the per-credential concurrency
    (both GithubHttp's); without them the process keeps its limits to itself."""
    if settings.sync.source == "github":
        from syncsvc.sources.github import GithubSource
        from syncsvc.sources.github_app import GithubApp
        from syncsvc.sources.github_credentials import CredentialStore

        github = settings.github
        app = GithubApp(github.app_id, github.app_key_file, github.api_url)
        credentials = CredentialStore(github.token, github.credentials_dir, app=app)
        return GithubSource(
            settings.github,
            # With a live bound, the pool must hold the largest part this replica may get.
            concurrency=max(settings.sync.concurrency, GITHUB_CONCURRENCY_BUDGET)
            if in_flight is not None
            else settings.sync.concurrency,
            cache=cache,
            credentials=credentials,
            budgets=budgets,
            in_flight=in_flight,
        )
    if settings.sync.local_dir is None:
        raise ConfigError(
            "CONTEXTMESH_LOCAL_SOURCE_DIR",
            "the local source needs a folder holding <user>/<repository> folders",
        )
    if not settings.sync.local_dir.is_dir():
        raise ConfigError(
            "CONTEXTMESH_LOCAL_SOURCE_DIR", f"{settings.sync.local_dir} is not a folder"
        )
    from syncsvc.sources.local import LocalSource

    return LocalSource(settings.sync.local_dir)
