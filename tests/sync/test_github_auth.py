"""GithubSource: the token, redirects (renamed repositories, other hosts) and GHE prefixes."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from meshkit.config import GithubSettings
from syncsvc.sources.base import RepoListing, SourceError
from syncsvc.sources.github import GithubSource
from syncsvc.sources.github_auth import ApiTokenAuth
from tests.support.fake_github import FakeGithub, populate

MakeSource = Callable[..., GithubSource]
TOKEN = "ghp_s3cretTOKENvalue0123456789"
CAP = 1024 * 1024


def listing(full_name: str) -> RepoListing:
    return RepoListing(full_name=full_name, fingerprint="f")


# -- private repositories and the token ----------------------------------------------------


async def test_private_repositories_need_the_token(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    fake_github.token = TOKEN
    fake_github.token_owner = "acme"  # the account's own credential (see test_github_source)
    fake_github.add_org("acme")
    fake_github.add_repo("acme/public", {"README.md": "public"})
    fake_github.add_repo("acme/secret", {"README.md": "secret"}, private=True)

    with_token = make_github_source(token=TOKEN)
    listings = {r.full_name: r for r in await with_token.list_repositories("acme")}
    assert set(listings) == {"acme/public", "acme/secret"}
    assert listings["acme/secret"].metadata.private is True
    fetched = await with_token.fetch(listings["acme/secret"], extra_files=(), max_file_bytes=CAP)
    assert fetched.readme.data == b"secret"

    anonymous = make_github_source()
    assert [r.full_name for r in await anonymous.list_repositories("acme")] == ["acme/public"]
    hidden = await anonymous.fetch(listings["acme/secret"], extra_files=(), max_file_bytes=CAP)
    assert hidden.readme.status == "missing"  # GitHub hides private repositories as 404

    sent = {r.authorization for r in fake_github.requests()}
    assert sent == {f"Bearer {TOKEN}", None}


async def test_a_wrong_token_is_a_clear_permanent_error_without_the_token(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    fake_github.token = TOKEN
    populate(fake_github, "octo", 1)
    with pytest.raises(SourceError) as caught:
        await make_github_source(token="ghp_wrong_token_value").list_repositories("octo")
    assert caught.value.transient is False
    assert "401" in str(caught.value) and "Bad credentials" in str(caught.value)
    assert "ghp_wrong_token_value" not in str(caught.value)


async def test_the_token_never_goes_to_another_host(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    fake_github.add_user("octo")
    fake_github.add_repo("octo/site", {"README.md": "# here"})
    with FakeGithub() as elsewhere:
        elsewhere.add_repo("octo/site", {".repo-context.json": '{"from": "elsewhere"}'})
        target = f"{elsewhere.url}/repos/octo/site/contents/.repo-context.json?ref=main"
        fake_github.redirect(target, status=307, path=r"contents/\.repo-context\.json")

        fetched = await make_github_source(token=TOKEN).fetch(
            listing("octo/site"), extra_files=(), max_file_bytes=CAP
        )

        assert fetched.context.data == b'{"from": "elsewhere"}'
        assert fetched.readme.data == b"# here"
        assert elsewhere.count() == 1
        assert [r.authorization for r in elsewhere.requests()] == [None]
        assert {r.authorization for r in fake_github.requests()} == {f"Bearer {TOKEN}"}


def test_the_auth_checks_scheme_host_and_port() -> None:
    auth = ApiTokenAuth(TOKEN, httpx.URL("https://ghe.example/api/v3"))

    def sent(url: str, headers: dict[str, str] | None = None) -> str | None:
        request = httpx.Request("GET", url, headers=headers)
        return next(auth.auth_flow(request)).headers.get("authorization")

    assert sent("https://ghe.example/api/v3/users/x") == f"Bearer {TOKEN}"
    assert sent("https://ghe.example:443/other") == f"Bearer {TOKEN}"
    assert sent("http://ghe.example/api/v3/users/x") is None
    assert sent("https://ghe.example:8443/api/v3/users/x") is None
    assert sent("https://evil.example/api/v3/users/x") is None
    assert sent("https://evil.example/", {"Authorization": "Bearer leaked"}) is None
    assert TOKEN not in repr(auth)


async def test_the_token_is_in_no_error_message_log_or_repr(
    fake_github: FakeGithub,
    make_github_source: MakeSource,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_github.add_user("octo")
    fake_github.add_repo("octo/site", {"README.md": "x"})
    # GitHub's message is part of some errors: even one that echoes the token is cleaned.
    fake_github.fail(403, path="readme", message=f"token {TOKEN} may not read this")
    fake_github.fail(500, path="contents")
    source = make_github_source(token=TOKEN, max_retries=1)

    with pytest.raises(SourceError) as forbidden:
        await source.fetch(listing("octo/site"), extra_files=(), max_file_bytes=CAP)
    fake_github.clear_faults()
    fake_github.fail(500, path="contents")
    with pytest.raises(SourceError) as failing:
        await source.fetch(listing("octo/site"), extra_files=(), max_file_bytes=CAP)

    for caught in (forbidden, failing):
        assert TOKEN not in str(caught.value)
        assert TOKEN not in repr(caught.value)
        assert caught.value.__context__ is None or TOKEN not in str(caught.value.__context__)
    assert "***" in str(forbidden.value)
    assert "HTTP 500" in str(failing.value)
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(source)
    assert TOKEN not in repr(GithubSettings(token=TOKEN))


# -- redirects -----------------------------------------------------------------------------


async def test_a_renamed_repository_is_followed(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    fake_github.add_user("octo")
    fake_github.add_repo("octo/old-name", {"README.md": "# moved", ".repo-context.json": "{}"})
    fake_github.token = TOKEN
    source = make_github_source(token=TOKEN)
    [before] = await source.list_repositories("octo")
    fake_github.rename_repo("octo/old-name", "new-name")

    fetched = await source.fetch(before, extra_files=(), max_file_bytes=CAP)

    assert fetched.readme.data == b"# moved"
    assert fetched.context.status == "ok"
    assert fetched.warnings and "octo/old-name" in fetched.warnings[0]
    moved = fake_github.requests(status=301)
    assert len(moved) == 2  # README and context each met the rename once
    followed = [r for r in fake_github.requests() if r.path.startswith("/repositories/")]
    assert len(followed) == 2 and all(r.status == 200 for r in followed)
    assert all(r.authorization == f"Bearer {TOKEN}" for r in followed)  # same host
    assert [r.full_name for r in await source.list_repositories("octo")] == ["octo/new-name"]


async def test_a_renamed_repository_still_answers_304(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    fake_github.add_repo("octo/old", {".repo-context.json": '{"same": true}'})
    source = make_github_source()
    await source.fetch(listing("octo/old"), extra_files=(), max_file_bytes=CAP)
    fake_github.rename_repo("octo/old", "new")
    fake_github.reset_log()

    fetched = await source.fetch(listing("octo/old"), extra_files=(), max_file_bytes=CAP)

    # The raw file's ETag is its content's: the conditional request survives the redirect.
    assert (fetched.context.status, fetched.context.data) == ("not_modified", b'{"same": true}')
    assert [r.status for r in fake_github.requests(kind="contents")] == [301, 304]


async def test_a_redirect_loop_is_a_permanent_error(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    fake_github.add_repo("octo/loop", {"README.md": "x"})
    fake_github.redirect(f"{fake_github.url}/repos/octo/loop/readme", path="readme", status=301)

    with pytest.raises(SourceError) as caught:
        await make_github_source().fetch(listing("octo/loop"), extra_files=(), max_file_bytes=CAP)

    assert caught.value.transient is False
    assert "redirects" in str(caught.value)
    assert fake_github.count(kind="readme") == 4  # the request and three hops


# -- GitHub Enterprise ---------------------------------------------------------------------


async def test_an_api_path_prefix_is_kept_everywhere(make_github_source: MakeSource) -> None:
    with FakeGithub(api_prefix="/api/v3") as ghe:
        assert ghe.url.endswith("/api/v3")
        populate(ghe, "octo", 150)
        source = make_github_source(ghe, api_url=ghe.url + "/")

        listings = await source.list_repositories("octo")
        fetched = await source.fetch(
            listings[0], extra_files=("ARCHITECTURE.md",), max_file_bytes=CAP
        )

        assert len(listings) == 150
        assert fetched.readme.status == fetched.context.status == fetched.extra[0].status == "ok"
        assert ghe.count(kind="unknown") == 0  # every request carried the prefix
        assert ghe.count(kind="list") == 2
