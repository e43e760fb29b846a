"""Users synced with their own GitHub token from the credential store, the shared token the
fallback; each token with a budget of its own; no token ever in a log line or a repr."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from syncsvc.sources.base import RepoListing, SourceError
from syncsvc.sources.github import GithubSource
from syncsvc.sources.github_credentials import SHARED, CredentialStore, credential_id
from tests.support.fake_github import FakeGithub

MakeSource = Callable[..., GithubSource]
CAP = 1024 * 1024
SHARED_TOKEN = "ghp_sharedSHAREDshared000000000000000"
OCTO_TOKEN = "ghp_octoOCTOocto1111111111111111111111"


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A credential store as a mounted Secret looks: one file per user, the token inside."""
    folder = tmp_path / "credentials"
    folder.mkdir()
    (folder / "octo").write_text(OCTO_TOKEN + "\n")
    return folder


def world(gh: FakeGithub) -> None:
    gh.token = SHARED_TOKEN
    gh.add_user_token(OCTO_TOKEN, "octo")
    for login in ("octo", "other"):
        gh.add_user(login)
        gh.add_repo(f"{login}/site", {"README.md": "# site", ".repo-context.json": "{}"})


def listing(full_name: str) -> RepoListing:
    return RepoListing(full_name=full_name, fingerprint="f")


def tokens_seen(gh: FakeGithub, repo: str) -> set[str | None]:
    return {r.authorization for r in gh.requests(repo=repo)}


# -- the store on its own ------------------------------------------------------------------


def test_a_user_with_a_file_gets_their_token_and_everyone_else_the_shared(store_dir: Path) -> None:
    store = CredentialStore(SHARED_TOKEN, store_dir)

    assert store.for_user("octo").token == OCTO_TOKEN
    assert store.for_user("Octo").token == OCTO_TOKEN  # logins are case-insensitive
    assert store.for_user("octo").source == "user"
    assert store.for_user("other").token == SHARED_TOKEN
    assert store.for_user("other").source == SHARED
    assert store.for_user(None).token == SHARED_TOKEN


def test_a_name_that_is_not_a_login_never_becomes_a_path(tmp_path: Path, store_dir: Path) -> None:
    (tmp_path / "outside").write_text("ghp_not_a_users_token")
    store = CredentialStore(SHARED_TOKEN, store_dir)

    for name in ("../outside", "octo/../../outside", ".", "", "a" * 50):
        assert store.for_user(name).token == SHARED_TOKEN


def test_a_rotated_token_is_read_again_after_the_reread_interval(store_dir: Path) -> None:
    now = [0.0]
    store = CredentialStore(SHARED_TOKEN, store_dir, reread_s=60, clock=lambda: now[0])
    assert store.for_user("octo").token == OCTO_TOKEN
    (store_dir / "octo").write_text("ghp_rotated")

    assert store.for_user("octo").token == OCTO_TOKEN  # remembered
    now[0] = 61
    assert store.for_user("octo").token == "ghp_rotated"


def test_no_repr_shows_a_token(store_dir: Path) -> None:
    store = CredentialStore(SHARED_TOKEN, store_dir)
    credential = store.for_user("octo")

    shown = repr(store) + repr(credential) + str(credential) + repr(store.shared)
    assert OCTO_TOKEN not in shown and SHARED_TOKEN not in shown
    assert credential.id == credential_id(OCTO_TOKEN) in shown
    assert len(credential.id) == 16


# -- the source against the stand-in -------------------------------------------------------


async def test_a_users_repositories_are_fetched_with_their_own_token(
    fake_github: FakeGithub, make_github_source: MakeSource, store_dir: Path
) -> None:
    world(fake_github)
    source = make_github_source(
        token=SHARED_TOKEN, credentials=CredentialStore(SHARED_TOKEN, store_dir)
    )

    listed = await source.list_repositories("octo")
    await source.fetch(listing("octo/site"), extra_files=(), max_file_bytes=CAP, user="octo")
    await source.fetch(listing("other/site"), extra_files=(), max_file_bytes=CAP, user="other")

    assert [r.full_name for r in listed] == ["octo/site"]
    listing_tokens = {r.authorization for r in fake_github.requests() if r.kind == "list"}
    assert listing_tokens == {f"Bearer {OCTO_TOKEN}"}
    assert tokens_seen(fake_github, "octo/site") == {f"Bearer {OCTO_TOKEN}"}
    assert tokens_seen(fake_github, "other/site") == {f"Bearer {SHARED_TOKEN}"}


async def test_a_users_token_spends_its_own_budget_not_the_shared_one(
    fake_github: FakeGithub, make_github_source: MakeSource, store_dir: Path
) -> None:
    world(fake_github)
    source = make_github_source(
        token=SHARED_TOKEN,
        rate_limit_reserve=0,
        credentials=CredentialStore(SHARED_TOKEN, store_dir),
    )
    fake_github.set_rate_limit(2, window_s=3600)
    # The shared token's budget is gone for the hour: the shared lane learns it...
    await source.fetch(listing("other/site"), extra_files=(), max_file_bytes=CAP, user="other")
    with pytest.raises(SourceError) as caught:
        await source.fetch(listing("other/site"), extra_files=(), max_file_bytes=CAP, user="other")
    assert caught.value.retry_after_s is not None and caught.value.retry_after_s > 3000

    # ...and octo, on a budget of their own, is not held back by it.
    fetched = await source.fetch(
        listing("octo/site"), extra_files=(), max_file_bytes=CAP, user="octo"
    )

    assert fetched.readme.status == "ok"
    assert fake_github.rate_remaining(OCTO_TOKEN) == 0
    assert fake_github.rate_remaining() == 0
    assert fake_github.count(status=403) == 0


async def test_no_token_reaches_a_log_line_or_an_error(
    fake_github: FakeGithub,
    make_github_source: MakeSource,
    store_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world(fake_github)
    caplog.set_level(logging.DEBUG)
    # GitHub's messages are echoed into errors: make one carry the token. The README's first
    # answer is a 500, so a retry is logged before the 403 ends the fetch (a 500 on another
    # request raced the 403, which could cancel it before its retry was logged).
    fake_github.fail(500, path="readme", times=1)
    fake_github.fail(403, path="readme", message=f"token {OCTO_TOKEN} may not read this")
    source = make_github_source(
        token=SHARED_TOKEN, credentials=CredentialStore(SHARED_TOKEN, store_dir)
    )

    with pytest.raises(SourceError) as caught:
        await source.fetch(listing("octo/site"), extra_files=(), max_file_bytes=CAP, user="octo")

    assert "retry 1 of" in caplog.text  # the 500 was logged
    for token in (OCTO_TOKEN, SHARED_TOKEN):
        assert token not in caplog.text
        assert token not in str(caught.value)
        assert token not in repr(source)
