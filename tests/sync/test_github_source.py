"""GithubSource against the GitHub stand-in: discovery, fetches and conditional requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from syncsvc.sources.base import (
    CachedResponse,
    MemoryResponseCache,
    RepoListing,
    ResponseCache,
    UserNotFoundError,
)
from syncsvc.sources.github import GithubSource
from tests.support.fake_github import FakeGithub, populate

MakeSource = Callable[..., GithubSource]
EXTRAS = ("ARCHITECTURE.md", "SKILLS-INDEX.md")
CAP = 1024 * 1024


def by_name(listings: list[RepoListing]) -> dict[str, RepoListing]:
    return {listing.full_name: listing for listing in listings}


# -- discovery -----------------------------------------------------------------------------


async def test_lists_every_repository_over_several_pages(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    populate(fake_github, "octo", 250)
    source = make_github_source()

    listings = await source.list_repositories("octo")

    assert len(listings) == 250
    assert {r.full_name for r in listings} == {f"octo/repo-{i:04d}" for i in range(250)}
    pages = fake_github.requests(kind="list")
    assert [r.path for r in pages] == ["/users/octo/repos"] * 3
    assert [r.query.get("page", "1") for r in pages] == ["1", "2", "3"]
    assert all(r.query["per_page"] == "100" and r.query["type"] == "owner" for r in pages)
    assert fake_github.count(kind="user") == 1


async def test_users_and_organisations_use_their_own_listing(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    fake_github.add_user("octo")
    fake_github.add_org("acme")
    fake_github.add_repo("octo/site")
    fake_github.add_repo("acme/platform")
    source = make_github_source()

    assert [r.full_name for r in await source.list_repositories("octo")] == ["octo/site"]
    assert [r.full_name for r in await source.list_repositories("acme")] == ["acme/platform"]

    assert [r.path for r in fake_github.requests(kind="list")] == [
        "/users/octo/repos",
        "/orgs/acme/repos",
    ]
    assert "type" not in fake_github.requests(kind="list")[1].query


async def test_private_repositories_are_listed_only_with_the_accounts_own_credential(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    """An operator's token sees an organisation's private repositories (as a member); they
    must not end up in a bundle that anyone may refresh and download."""
    fake_github.token = "operator-token"
    fake_github.add_org("acme")
    fake_github.add_repo("acme/platform")
    fake_github.add_repo("acme/secret-plans", private=True)
    source = make_github_source(token="operator-token")

    assert [r.full_name for r in await source.list_repositories("acme")] == ["acme/platform"]

    fake_github.token_owner = "acme"  # the credential is the account's own
    own = make_github_source(token="operator-token")
    listed = sorted(r.full_name for r in await own.list_repositories("acme"))
    assert listed == ["acme/platform", "acme/secret-plans"]
    # Who the token belongs to is asked once per source, not once per refresh.
    await own.list_repositories("acme")
    assert [r.path for r in fake_github.requests() if r.path == "/user"] == ["/user", "/user"]


async def test_listing_maps_metadata_and_fingerprints(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    fake_github.add_user("octo")
    fake_github.add_repo(
        "octo/site",
        description="My site",
        language="TypeScript",
        topics=["web", "portfolio"],
        homepage="https://octo.example",
        default_branch="trunk",
    )
    fake_github.add_repo("octo/empty", pushed=False, homepage="")
    source = make_github_source()

    repos = by_name(await source.list_repositories("octo"))

    site = repos["octo/site"]
    assert site.fingerprint == "2026-11-01T10:00:01Z@trunk"
    assert site.default_branch == "trunk"
    assert (site.metadata.description, site.metadata.language, site.metadata.homepage) == (
        "My site",
        "TypeScript",
        "https://octo.example",
    )
    assert site.metadata.topics == ("web", "portfolio")
    assert site.metadata.url == "https://github.com/octo/site"
    assert site.metadata.private is False
    # Never pushed: the fingerprint falls back to updated_at; "" reads as no homepage.
    assert repos["octo/empty"].fingerprint == "2026-11-01T10:00:02Z@main"
    assert repos["octo/empty"].metadata.homepage is None


async def test_fingerprint_moves_only_for_the_changed_repository(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    populate(fake_github, "octo", 3)
    source = make_github_source()
    before = by_name(await source.list_repositories("octo"))

    fake_github.change_file("octo/repo-0001", "README.md", "# changed")
    after = by_name(await source.list_repositories("octo"))

    changed = {name for name in before if before[name].fingerprint != after[name].fingerprint}
    assert changed == {"octo/repo-0001"}


async def test_unknown_user_is_user_not_found(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    with pytest.raises(UserNotFoundError) as caught:
        await make_github_source().list_repositories("nobody")
    assert caught.value.transient is False
    assert fake_github.count() == 1


async def test_login_is_looked_up_case_insensitively(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    populate(fake_github, "Octo", 2)
    listings = await make_github_source().list_repositories("OCTO")
    assert sorted(r.full_name for r in listings) == ["Octo/repo-0000", "Octo/repo-0001"]
    assert fake_github.requests(kind="list")[0].path == "/users/Octo/repos"


async def test_unchanged_refresh_of_1000_repositories_is_its_10_list_pages_all_304(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    populate(fake_github, "octo", 1000)
    source = make_github_source()
    first = await source.list_repositories("octo")
    assert fake_github.count() == 11  # the account lookup, then 10 pages
    fake_github.reset_log()

    again = await source.list_repositories("octo")

    assert sorted(again, key=lambda r: r.full_name) == sorted(first, key=lambda r: r.full_name)
    assert fake_github.count() == 10  # the account is remembered: pages only
    assert fake_github.count(kind="list", status=304) == 10
    assert fake_github.stats()["body_bytes"] == 0
    assert all(r.if_none_match for r in fake_github.requests())


async def test_unchanged_refresh_costs_at_most_11_even_when_304s_drop_the_link_header(
    make_github_source: MakeSource,
) -> None:
    # 1000 repositories fill the last page exactly, so the source looks one page further.
    with FakeGithub(link_on_304=False) as gh:
        populate(gh, "octo", 1000)
        source = make_github_source(gh)
        await source.list_repositories("octo")
        await source.list_repositories("octo")
        gh.reset_log()
        await source.list_repositories("octo")
        assert gh.count() <= 11
        assert gh.count(status=304) == gh.count()  # the probe page is remembered too


async def test_a_remembered_account_that_is_gone_is_looked_up_again(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    populate(fake_github, "octo", 3)
    source = make_github_source()
    await source.list_repositories("octo")
    fake_github.remove_account("octo")
    with pytest.raises(UserNotFoundError):
        await source.list_repositories("octo")
    assert [r.kind for r in fake_github.requests()][-2:] == ["list", "user"]


async def test_304_without_link_header_still_finds_a_repository_added_on_a_new_page(
    make_github_source: MakeSource,
) -> None:
    # If a 304 does not repeat the Link header, the remembered one is used, and a full last
    # page is followed by a look at the next: a new repository leaves that page unchanged.
    with FakeGithub(link_on_304=False) as gh:
        populate(gh, "octo", 200)
        source = make_github_source(gh)
        assert len(await source.list_repositories("octo")) == 200
        assert len(await source.list_repositories("octo")) == 200

        gh.add_repo("octo/zzz-new")
        gh.reset_log()
        listings = await source.list_repositories("octo")

        assert len(listings) == 201
        assert "octo/zzz-new" in by_name(listings)
        assert [r.status for r in gh.requests(kind="list")] == [304, 304, 200]


# -- fetch ---------------------------------------------------------------------------------


async def test_fetch_reads_context_readme_and_extras_and_reports_missing_ones(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    fake_github.add_user("octo")
    fake_github.add_repo(
        "octo/site",
        {
            ".repo-context.json": '{"summary": "hi"}',
            "README.md": "# Site",
            "ARCHITECTURE.md": "# Arch",
        },
    )
    source = make_github_source()
    [listing] = await source.list_repositories("octo")

    fetched = await source.fetch(listing, extra_files=EXTRAS, max_file_bytes=CAP)

    assert fetched.context.status == "ok"
    assert json.loads(fetched.context.data or b"") == {"summary": "hi"}
    assert (fetched.readme.path, fetched.readme.status, fetched.readme.data) == (
        "README.md",
        "ok",
        b"# Site",
    )
    assert fetched.readme.size == len(b"# Site")
    assert [(f.path, f.status) for f in fetched.extra] == [
        ("ARCHITECTURE.md", "ok"),
        ("SKILLS-INDEX.md", "missing"),
    ]
    assert fetched.extra[1].data is None
    assert fetched.warnings == ()
    contents = fake_github.requests(kind="contents")
    assert contents
    assert all(r.query == {"ref": "main"} for r in contents)
    assert all("raw" in (r.accept or "") for r in contents)


async def test_readme_is_found_whatever_its_name(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    fake_github.add_repo("octo/rst", {"readme.rst": "Title\n====="})
    fake_github.add_repo("octo/docs", {"docs/README.md": "# In docs"})
    fake_github.add_repo("octo/none", {"main.py": "print()"})
    source = make_github_source()
    repos = by_name(await source.list_repositories("octo"))

    rst = await source.fetch(repos["octo/rst"], extra_files=(), max_file_bytes=CAP)
    docs = await source.fetch(repos["octo/docs"], extra_files=(), max_file_bytes=CAP)
    none = await source.fetch(repos["octo/none"], extra_files=(), max_file_bytes=CAP)

    assert (rst.readme.path, rst.readme.data) == ("readme.rst", b"Title\n=====")
    assert (docs.readme.path, docs.readme.data) == ("docs/README.md", b"# In docs")
    assert none.readme.status == "missing" and none.context.status == "missing"


async def test_files_over_the_cap_are_too_large_and_not_kept(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    big = "x" * 5000
    fake_github.add_repo(
        "octo/big", {".repo-context.json": big, "README.md": big, "ARCHITECTURE.md": "small"}
    )
    source = make_github_source()
    [listing] = await source.list_repositories("octo")

    fetched = await source.fetch(listing, extra_files=("ARCHITECTURE.md",), max_file_bytes=1024)

    assert (fetched.context.status, fetched.context.data, fetched.context.size) == (
        "too_large",
        None,
        5000,
    )
    assert (fetched.readme.path, fetched.readme.status, fetched.readme.data) == (
        "README.md",
        "too_large",
        None,
    )
    assert fetched.readme.size == 5000
    assert fetched.extra[0].status == "ok"

    # Unchanged, a file that was too large costs a 304 next time, not a download.
    fake_github.reset_log()
    again = await source.fetch(listing, extra_files=("ARCHITECTURE.md",), max_file_bytes=1024)
    assert (again.context.status, again.readme.status) == ("too_large", "too_large")
    assert fake_github.count(status=304) == 3 == fake_github.count()

    # With a larger cap the remembered verdict no longer applies: the file is read.
    fake_github.reset_log()
    roomy = await source.fetch(listing, extra_files=(), max_file_bytes=10_000)
    assert roomy.context.status == "ok" and roomy.context.data == big.encode()
    assert roomy.readme.status == "ok" and roomy.readme.data == big.encode()


async def test_a_readme_over_the_cap_is_too_large_without_the_size_in_the_json(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    fake_github.add_repo("octo/big", {"README.markdown": "y" * 200_000})
    source = make_github_source()
    [listing] = await source.list_repositories("octo")

    fetched = await source.fetch(listing, extra_files=(), max_file_bytes=1024)

    # The JSON is cut off long before its end; its head still names the file and its size.
    assert (fetched.readme.path, fetched.readme.status) == ("README.markdown", "too_large")
    assert fetched.readme.size == 200_000


async def test_a_readme_over_githubs_json_limit_is_read_raw(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    data = b"z" * (1024 * 1024 + 10)  # GitHub's JSON form carries no content above 1 MB
    fake_github.add_repo("octo/huge", {"README.md": data})
    source = make_github_source()
    [listing] = await source.list_repositories("octo")

    fetched = await source.fetch(listing, extra_files=(), max_file_bytes=2 * 1024 * 1024)

    assert (fetched.readme.status, fetched.readme.data) == ("ok", data)
    assert [r.kind for r in fake_github.requests(repo="octo/huge")].count("readme") == 1


async def test_refetch_of_an_unchanged_repository_is_all_304_with_cached_bodies(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    populate(fake_github, "octo", 5)
    source = make_github_source()
    listings = await source.list_repositories("octo")
    first = [await source.fetch(r, extra_files=EXTRAS, max_file_bytes=CAP) for r in listings]
    fake_github.reset_log()

    second = [await source.fetch(r, extra_files=EXTRAS, max_file_bytes=CAP) for r in listings]

    assert fake_github.count() == 5 * 4
    assert fake_github.count(status=304) == 5 * 4
    assert fake_github.stats()["body_bytes"] == 0
    for before, after in zip(first, second, strict=True):
        for old, new in zip(
            (before.context, before.readme, *before.extra),
            (after.context, after.readme, *after.extra),
            strict=True,
        ):
            assert new.status == "not_modified"
            assert (new.path, new.data, new.size) == (old.path, old.data, old.size)


async def test_a_changed_file_is_read_again_and_the_others_are_not(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    populate(fake_github, "octo", 1)
    source = make_github_source()
    [listing] = await source.list_repositories("octo")
    await source.fetch(listing, extra_files=EXTRAS, max_file_bytes=CAP)

    fake_github.change_file("octo/repo-0000", "ARCHITECTURE.md", "# New architecture")
    fake_github.reset_log()
    fetched = await source.fetch(listing, extra_files=EXTRAS, max_file_bytes=CAP)

    assert fetched.extra[0].status == "ok"
    assert fetched.extra[0].data == b"# New architecture"
    assert [f.status for f in (fetched.context, fetched.readme, fetched.extra[1])] == [
        "not_modified"
    ] * 3
    assert fake_github.count(status=200) == 1


async def test_the_cache_is_shared_between_workers(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    populate(fake_github, "octo", 2)
    cache = MemoryResponseCache()
    one = make_github_source(cache=cache)
    listings = await one.list_repositories("octo")
    for listing in listings:
        await one.fetch(listing, extra_files=EXTRAS, max_file_bytes=CAP)
    fake_github.reset_log()

    other = make_github_source(cache=cache)
    assert len(await other.list_repositories("octo")) == 2
    for listing in listings:
        await other.fetch(listing, extra_files=EXTRAS, max_file_bytes=CAP)

    # One list page (the account is remembered) and four files of each repository.
    assert fake_github.count() == fake_github.count(status=304) == 1 + 2 * 4


class BrokenCache(ResponseCache):
    async def get(self, url: str) -> CachedResponse | None:
        raise ConnectionError("cache down")

    async def put(self, url: str, response: CachedResponse) -> None:
        raise ConnectionError("cache down")


async def test_a_failing_cache_costs_only_the_304s(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    populate(fake_github, "octo", 2)
    source = make_github_source(cache=BrokenCache())

    listings = await source.list_repositories("octo")
    fetched = await source.fetch(listings[0], extra_files=EXTRAS, max_file_bytes=CAP)

    assert len(listings) == 2
    assert fetched.readme.status == "ok"


async def test_unreadable_cache_entries_count_as_absent(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    populate(fake_github, "octo", 1)
    cache = MemoryResponseCache()
    source = make_github_source(cache=cache)
    await source.list_repositories("octo")
    for url in list(cache._entries):
        await cache.put(url, CachedResponse(etag='"x"', body=b"not ours"))
    fake_github.reset_log()

    assert len(await source.list_repositories("octo")) == 1
    assert fake_github.count(status=200) == 2
    assert all(r.if_none_match is None for r in fake_github.requests())


async def test_concurrency_is_bounded_across_all_requests(
    make_github_source: MakeSource,
) -> None:
    with FakeGithub(latency_s=0.02) as gh:
        populate(gh, "octo", 30)
        source = make_github_source(gh, concurrency=4)
        listings = await source.list_repositories("octo")
        gh.reset_log()
        await asyncio.gather(
            *(source.fetch(r, extra_files=EXTRAS, max_file_bytes=CAP) for r in listings)
        )

        assert gh.count() == 30 * 4
        assert gh.max_in_flight == 4


async def test_extra_files_that_are_not_plain_relative_paths_are_skipped(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    fake_github.add_repo("octo/site", {"docs/guide.md": "guide"})
    source = make_github_source()
    [listing] = await source.list_repositories("octo")
    fake_github.reset_log()

    fetched = await source.fetch(
        listing, extra_files=("docs/guide.md", "../../users/octo", "/etc/x"), max_file_bytes=CAP
    )

    assert [(f.path, f.status) for f in fetched.extra] == [
        ("docs/guide.md", "ok"),
        ("../../users/octo", "missing"),
        ("/etc/x", "missing"),
    ]
    assert len(fetched.warnings) == 2
    assert sorted(r.path for r in fake_github.requests(kind="contents")) == [
        "/repos/octo/site/contents/.repo-context.json",
        "/repos/octo/site/contents/docs/guide.md",
    ]
    assert fake_github.count() == 3  # those two and the README
