"""Build the configured source."""

from __future__ import annotations

from meshkit.config import Settings
from meshkit.errors import ConfigError
from syncsvc.sources.base import ResponseCache, Source

__all__ = ["open_source"]


def open_source(settings: Settings, cache: ResponseCache) -> Source:
    if settings.sync.source == "github":
        from syncsvc.sources.github import GithubSource
        from syncsvc.sources.github_credentials import CredentialStore

        credentials = CredentialStore(settings.github.token, settings.github.credentials_dir)
        return GithubSource(
            settings.github,
            concurrency=settings.sync.concurrency,
            cache=cache,
            credentials=credentials,
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
