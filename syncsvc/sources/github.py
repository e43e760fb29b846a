"""The GitHub source: discovery of a user's or organisation's repositories, and fetches.

Everything goes through conditional requests backed by the shared ResponseCache, so an
unchanged refresh costs only 304s (which do not count against GitHub's rate limit): the user
lookup plus one per listing page. The parts: github_http (one GET with retries, redirects
and a body cap), github_limits (rate limits, backoff), github_auth (the token, API host only),
github_transport (the pooled client), github_cache (what is remembered per URL),
github_credentials (whose token syncs which user), github_budget (each token's rate limit,
shared by the replicas).

Files:
    .repo-context.json, extra files  GET /repos/{o}/{r}/contents/{path}?ref=  in the raw media
                                      type, streamed: Content-Length (or the bytes read) shows
                                      a file over the cap before its body is kept.
    README                            GET /repos/{o}/{r}/readme?ref=  in the JSON form, whose
                                      `path` names the README (README.md, readme.rst, ...)
                                      and whose `size` comes before its content is decoded.
Create one GithubSource per process: it owns the process's client, and per credential its
concurrency bound and view of the rate limit. A user whose own token (or GitHub App
installation) is in the credential store is listed and fetched with it; everyone else with
the shared token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from nats.js.kv import KeyValue

from meshkit.config import GithubSettings
from meshkit.domain.documents import RepositoryMetadata
from meshkit.text import encodable
from syncsvc.sources.base import (
    FetchedFile,
    FetchedRepo,
    RepoListing,
    ResponseCache,
    Source,
    SourceError,
    UserNotFoundError,
    is_valid_full_name,
)
from syncsvc.sources.github_cache import Entry, EntryCache
from syncsvc.sources.github_credentials import Credential, CredentialStore
from syncsvc.sources.github_http import GithubHttp, Reply
from syncsvc.sources.github_limits import GithubPacing

__all__ = ["CONTEXT_FILE", "PER_PAGE", "GithubPacing", "GithubSource"]

CONTEXT_FILE = ".repo-context.json"
PER_PAGE = 100
MAX_PAGES = 1000
"""100,000 repositories: far beyond any account, a guard against a pagination loop."""
JSON_MEDIA = "application/vnd.github+json"
RAW_MEDIA = "application/vnd.github.raw+json"
_JSON_SLACK = 16 * 1024
"""Room for the README JSON's fields besides its base64 content."""
_README_HEAD = 4096
"""Bytes of an over-long README JSON kept to read its path and size from."""

_T = TypeVar("_T")
_log = logging.getLogger(__name__)
_PATH_FIELD = re.compile(r'"path"\s*:\s*"((?:[^"\\]|\\.)*)"')
_SIZE_FIELD = re.compile(r'"size"\s*:\s*(\d+)')


class _ListingGone(SourceError):
    """A listing page answered 404: the account was renamed or deleted."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class GithubSource(Source):
    """Repositories on github.com or a GitHub Enterprise server (api_url with its prefix)."""

    def __init__(
        self,
        settings: GithubSettings,
        *,
        concurrency: int,
        cache: ResponseCache,
        client: httpx.AsyncClient | None = None,
        pacing: GithubPacing | None = None,
        credentials: CredentialStore | None = None,
        budgets: KeyValue | None = None,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        """`client` is used as given and left open on close(); without one the source builds
        its own, pooled to `concurrency`. `pacing` tunes backoff and waits (tests shorten it).
        `credentials` finds users' own tokens (default: the shared token for everyone);
        `budgets` and `in_flight` are GithubHttp's (shared rate limits, live concurrency)."""
        self._http = GithubHttp(
            settings,
            concurrency=concurrency,
            client=client,
            pacing=pacing,
            budgets=budgets,
            in_flight=in_flight,
        )
        self._credentials = credentials or CredentialStore(settings.token)
        self._cache = EntryCache(cache)
        self._concurrency = concurrency
        self._owners: dict[str, str] = {}
        """Credential id -> the login its token belongs to, once asked (GET /user)."""

    def __repr__(self) -> str:
        return f"GithubSource(api_url='{self._http.api_url}', concurrency={self._concurrency})"

    async def close(self) -> None:
        await self._http.aclose()

    # -- discovery -------------------------------------------------------------------------

    async def list_repositories(self, user: str) -> list[RepoListing]:
        credential = self._credentials.for_user(user)
        # An account's login and type are remembered from its last lookup, so an unchanged
        # refresh costs only its list pages (all 304s). A listing that answers 404 means the
        # account was renamed or deleted since: look it up again.
        remembered = await self._remembered_account(user)
        if remembered is not None:
            try:
                return await self._list(credential, *remembered)
            except _ListingGone:
                pass
        return await self._list(credential, *await self._lookup(credential, user))

    async def _remembered_account(self, user: str) -> tuple[str, str] | None:
        cached = await self._cache.get(str(self._http.url(f"/users/{_seg(user)}")))
        if cached is None:
            return None
        return str(cached.meta.get("login", user)), str(cached.meta.get("type", "User"))

    async def _list(self, credential: Credential, login: str, kind: str) -> list[RepoListing]:
        """The account's repositories; the private ones only when the credential is the
        account's own (an operator's token must not bundle an organisation's private code
        for whoever asks)."""
        listed = await self._list_all(credential, login, kind)
        if (
            not any(r.metadata.private for r in listed)
            or await self._credential_owner(credential) == login.lower()
        ):
            return listed
        public = [r for r in listed if not r.metadata.private]
        _log.info(
            "listing of %s: %d private repositories left out; the credential is not %s's own",
            login,
            len(listed) - len(public),
            login,
        )
        return public

    async def _credential_owner(self, credential: Credential) -> str | None:
        """The login (lower case) the token belongs to; None without a token or an answer.
        An installation's token belongs to the account the App is installed on (GET /user
        is not open to installation tokens)."""
        if credential.installation is not None:
            return await self._http.installation_account(credential)
        if not credential.token:
            return None
        if credential.id not in self._owners:
            reply = await self._http.get(
                self._http.url("/user"), accept=JSON_MEDIA, credential=credential
            )
            account = _json(reply, "the token's user") if reply.status == 200 else None
            login = _text(account.get("login")) if isinstance(account, dict) else None
            if not login:
                return None
            self._owners[credential.id] = encodable(login).lower()
        return self._owners[credential.id]

    async def _list_all(self, credential: Credential, login: str, kind: str) -> list[RepoListing]:
        if kind == "Organization":
            url = self._http.url(f"/orgs/{_seg(login)}/repos", {"per_page": PER_PAGE})
        else:
            url = self._http.url(
                f"/users/{_seg(login)}/repos", {"per_page": PER_PAGE, "type": "owner"}
            )
        found: dict[str, RepoListing] = {}
        seen: set[str] = set()
        next_url: httpx.URL | None = url
        while next_url is not None:
            if str(next_url) in seen or len(seen) >= MAX_PAGES:
                raise SourceError(f"GitHub listing of {login!r} does not end", transient=True)
            seen.add(str(next_url))
            items, next_url = await self._list_page(credential, next_url)
            for item in items:
                listing = _listing(item)
                if listing is not None:
                    # A repository may move between pages while they are read: keep one.
                    found.setdefault(listing.full_name.lower(), listing)
        return list(found.values())

    async def _lookup(self, credential: Credential, user: str) -> tuple[str, str]:
        """The account's login as GitHub spells it, and its type (User or Organization)."""
        url = self._http.url(f"/users/{_seg(user)}")
        key = str(url)
        cached = await self._cache.get(key)
        reply = await self._http.get(
            url, accept=JSON_MEDIA, etag=_etag(cached), credential=credential
        )
        if reply.status == 404:
            raise UserNotFoundError(user)
        if reply.status == 304 and cached is not None:
            return str(cached.meta.get("login", user)), str(cached.meta.get("type", "User"))
        account = _json(reply, f"user {user!r}")
        if not isinstance(account, dict):
            raise SourceError(
                f"GitHub answered an unexpected user record for {user!r}", transient=True
            )
        login = encodable(_text(account.get("login")) or user)
        kind = "Organization" if account.get("type") == "Organization" else "User"
        if etag := reply.headers.get("etag"):
            await self._cache.put(key, Entry(etag, {"login": login, "type": kind}))
        return login, kind

    async def _list_page(
        self, credential: Credential, url: httpx.URL
    ) -> tuple[list[dict[str, Any]], httpx.URL | None]:
        """One listing page's repositories (only the fields a listing needs), and the next."""
        key = str(url)
        cached = await self._cache.get(key)
        remembered_items = _items(cached)
        if remembered_items is None:
            cached = None  # unreadable: ask in full
        reply = await self._http.get(
            url, accept=JSON_MEDIA, etag=_etag(cached), credential=credential
        )
        if reply.status == 404:
            raise _ListingGone("GitHub listing vanished while it was read")
        if reply.status == 304 and cached is not None and remembered_items is not None:
            items = remembered_items
            if "link" in reply.headers:
                return items, _next_link(reply.headers)
            # This 304 did not repeat the Link header: use the remembered one, and look one
            # page further when the last page was full, since a repository added since then
            # leaves that page's body (and ETag) as it was.
            remembered = cached.meta.get("next")
            if isinstance(remembered, str) and remembered:
                return items, httpx.URL(remembered)
            return items, _page_after(url) if len(items) >= PER_PAGE else None
        page = _json(reply, "repository listing")
        if not isinstance(page, list):
            raise SourceError("GitHub answered an unexpected repository listing", transient=True)
        items = [_compact(item) for item in page if isinstance(item, dict)]
        next_url = _next_link(reply.headers)
        if etag := reply.headers.get("etag"):
            meta = {"next": str(next_url) if next_url else None}
            await self._cache.put(key, Entry(etag, meta, json.dumps(items).encode()))
        return items, next_url

    # -- fetch -----------------------------------------------------------------------------

    async def fetch(
        self,
        repo: RepoListing,
        *,
        extra_files: tuple[str, ...],
        max_file_bytes: int,
        user: str | None = None,
    ) -> FetchedRepo:
        credential = self._credentials.for_user(user)
        base = _repo_path(repo)
        branch = repo.default_branch
        redirected: set[str] = set()  # paths GitHub redirected (the repository moved)
        unsafe = [path for path in extra_files if not _safe_path(path)]

        async def extra(path: str) -> FetchedFile:
            if path in unsafe:
                return FetchedFile(path, "missing")
            return await self._fetch_file(
                credential, base, branch, path, max_file_bytes, redirected
            )

        readme, context, *extras = await _all(
            self._fetch_readme(credential, base, branch, max_file_bytes, redirected),
            self._fetch_file(credential, base, branch, CONTEXT_FILE, max_file_bytes, redirected),
            *(extra(path) for path in extra_files),
        )
        warnings = [
            f"skipped the extra file {path!r}: not a plain relative path" for path in unsafe
        ]
        if redirected:
            warnings.append(
                f"GitHub redirected requests for {repo.full_name} (renamed or transferred); "
                "the next listing shows its new name"
            )
        return FetchedRepo(
            context=context, readme=readme, extra=tuple(extras), warnings=tuple(warnings)
        )

    async def fetch_files(
        self,
        repo: RepoListing,
        paths: tuple[str, ...],
        *,
        max_file_bytes: int,
        user: str | None = None,
    ) -> tuple[FetchedFile, ...]:
        credential = self._credentials.for_user(user)
        base, branch, redirected = _repo_path(repo), repo.default_branch, set[str]()
        return tuple(
            await _all(
                *(
                    self._fetch_file(credential, base, branch, path, max_file_bytes, redirected)
                    for path in paths
                )
            )
        )

    async def _fetch_file(
        self,
        credential: Credential,
        base: str,
        branch: str,
        path: str,
        cap: int,
        redirected: set[str],
    ) -> FetchedFile:
        """A file in the raw media type: ok, not_modified, missing or too_large."""
        url = self._http.url(f"{base}/contents/{_path(path)}", {"ref": branch})
        key = str(url)
        cached = _usable(await self._cache.get(key), cap)
        reply = await self._http.get(
            url, accept=RAW_MEDIA, etag=_etag(cached), max_body=cap, credential=credential
        )
        if reply.redirected:
            redirected.add(path)
        if reply.status == 404:
            return FetchedFile(path, "missing")
        if reply.status == 304 and cached is not None:
            return _from_cache(path, cached, cap)
        etag = reply.headers.get("etag")
        if reply.over_cap:
            if etag:
                await self._cache.put(key, Entry(etag, {"kind": "too_large", "size": reply.size}))
            return FetchedFile(path, "too_large", size=reply.size)
        if etag:
            await self._cache.put(key, Entry(etag, {"kind": "ok"}, reply.body))
        return FetchedFile(path, "ok", reply.body, len(reply.body))

    async def _fetch_readme(
        self, credential: Credential, base: str, branch: str, cap: int, redirected: set[str]
    ) -> FetchedFile:
        """The preferred README in the JSON form, which names it."""
        url = self._http.url(f"{base}/readme", {"ref": branch})
        key = str(url)
        cached = _usable(await self._cache.get(key), cap)
        # Base64 (4/3) with a newline every 60 characters, escaped in JSON (62/60).
        limit = (cap + 2) // 3 * 4 * 62 // 60 + _JSON_SLACK
        reply = await self._http.get(
            url,
            accept=JSON_MEDIA,
            etag=_etag(cached),
            max_body=limit,
            keep_head=_README_HEAD,
            credential=credential,
        )
        if reply.redirected:
            redirected.add("README")
        if reply.status == 404:
            return FetchedFile("README.md", "missing")
        if reply.status == 304 and cached is not None:
            return _from_cache(str(cached.meta.get("path", "README.md")), cached, cap)
        etag = reply.headers.get("etag")
        if reply.over_cap:
            # Only a file over the cap makes the JSON this long. GitHub sends name, path and
            # size before the content, so the first bytes usually tell which and how big.
            path, size = _peek_readme(reply.head, cap)
            if etag:
                meta = {"kind": "too_large", "size": size, "path": path}
                await self._cache.put(key, Entry(etag, meta))
            return FetchedFile(path, "too_large", size=size)
        doc = _json(reply, "README")
        if not isinstance(doc, dict):
            raise SourceError("GitHub answered an unexpected README record", transient=True)
        path = _readme_path(_text(doc.get("path")))
        stated = doc.get("size")
        size = stated if isinstance(stated, int) else 0
        if size > cap:
            if etag:
                meta = {"kind": "too_large", "size": size, "path": path}
                await self._cache.put(key, Entry(etag, meta))
            return FetchedFile(path, "too_large", size=size)
        if doc.get("encoding") != "base64":
            # GitHub leaves files over 1 MB out of the JSON form: read that one raw.
            return await self._fetch_file(credential, base, branch, path, cap, redirected)
        try:
            data = base64.b64decode(str(doc.get("content", "")))
        except (binascii.Error, ValueError):
            raise SourceError(
                "GitHub sent a README whose content is not base64", transient=True
            ) from None
        if etag:
            await self._cache.put(key, Entry(etag, {"kind": "ok", "path": path}, data))
        return FetchedFile(path, "ok", data, len(data))


# -- helpers -------------------------------------------------------------------------------


def _repo_path(repo: RepoListing) -> str:
    """The API path of a listed repository, /repos/<owner>/<name>."""
    owner, _, name = repo.full_name.partition("/")
    if not owner or not name:
        raise SourceError(f"not an owner/name repository name: {repo.full_name!r}", transient=False)
    return f"/repos/{_seg(owner)}/{_seg(name)}"


async def _all(*calls: Awaitable[_T]) -> list[_T]:
    """Await all, in order; on the first failure cancel the rest and raise that failure."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _seg(value: str) -> str:
    """One URL path segment, quoted so no name can reach another endpoint."""
    return quote(value, safe="")


def _path(path: str) -> str:
    return "/".join(_seg(part) for part in path.split("/"))


def _safe_path(path: str) -> bool:
    """A relative path whose segments are names: nothing that could climb out of contents/."""
    parts = path.split("/")
    return bool(path) and all(part not in ("", ".", "..") for part in parts)


def _etag(entry: Entry | None) -> str | None:
    return entry.etag if entry is not None else None


def _usable(entry: Entry | None, cap: int) -> Entry | None:
    """A remembered 'too large' is only worth a conditional request while it still is."""
    if entry is not None and entry.meta.get("kind") == "too_large":
        return entry if _size(entry) > cap else None
    return entry


def _size(entry: Entry) -> int:
    size = entry.meta.get("size")
    return size if isinstance(size, int) else len(entry.payload)


def _items(entry: Entry | None) -> list[dict[str, Any]] | None:
    """A remembered listing page's repositories: [] without an entry, None for one that
    cannot be read (which is then ignored)."""
    if entry is None:
        return []
    try:
        items = json.loads(entry.payload)
    except ValueError:
        return None
    return items if isinstance(items, list) else None


def _from_cache(path: str, entry: Entry, cap: int) -> FetchedFile:
    if entry.meta.get("kind") == "too_large" or len(entry.payload) > cap:
        return FetchedFile(path, "too_large", size=_size(entry))
    return FetchedFile(path, "not_modified", entry.payload, len(entry.payload))


def _peek_readme(head: bytes, cap: int) -> tuple[str, int]:
    """Path and size from the start of a README JSON cut short; cap + 1 when no size shows."""
    before = head.split(b'"content"', 1)[0].decode("utf-8", "replace")
    path_match = _PATH_FIELD.search(before)
    size_match = _SIZE_FIELD.search(before)
    path = "README.md"
    if path_match:
        with contextlib.suppress(ValueError):
            path = _readme_path(str(json.loads(f'"{path_match.group(1)}"')))
    return path, max(int(size_match.group(1)), cap + 1) if size_match else cap + 1


def _readme_path(path: str | None) -> str:
    """The README's path as GitHub named it, made encodable (it names a URL and a result
    field); README.md when there is none or it is not a plain relative path."""
    path = encodable(path) if path else ""
    return path if _safe_path(path) else "README.md"


def _json(reply: Reply, what: str) -> Any:
    try:
        return json.loads(reply.body)
    except ValueError:
        raise SourceError(f"GitHub answered {what} with malformed JSON", transient=True) from None


def _next_link(headers: httpx.Headers) -> httpx.URL | None:
    """The rel="next" target of a Link header, if any."""
    for part in headers.get("link", "").split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") and target.strip().startswith("<"):
            return httpx.URL(target.strip()[1:-1])
    return None


def _page_after(url: httpx.URL) -> httpx.URL:
    page = int(url.params.get("page", "1") or 1)
    return url.copy_set_param("page", str(page + 1))


_KEPT = (
    "full_name",
    "pushed_at",
    "updated_at",
    "default_branch",
    "description",
    "language",
    "topics",
    "homepage",
    "html_url",
    "private",
)


def _compact(item: dict[str, Any]) -> dict[str, Any]:
    """The fields a listing needs: what a listing page's cache entry keeps."""
    return {name: item.get(name) for name in _KEPT}


def _listing(item: dict[str, Any]) -> RepoListing | None:
    """The listing of one item of a listing page; None (logged) for one without a usable
    owner/name, which could not name a blob key. RepoListing makes the other fields safe."""
    full_name = item.get("full_name")
    if not isinstance(full_name, str) or not is_valid_full_name(full_name):
        shown = full_name[:200] if isinstance(full_name, str) else type(full_name).__name__
        _log.warning("skipping a repository GitHub listed as %r: not an owner/name", shown)
        return None
    branch = _text(item.get("default_branch")) or "main"
    changed = _text(item.get("pushed_at")) or _text(item.get("updated_at")) or "unknown"
    topics = item.get("topics")
    return RepoListing(
        full_name=full_name,
        fingerprint=f"{changed}@{branch}",
        default_branch=branch,
        metadata=RepositoryMetadata(
            description=_text(item.get("description")),
            language=_text(item.get("language")),
            topics=tuple(t for t in topics if isinstance(t, str))
            if isinstance(topics, list)
            else (),
            homepage=_text(item.get("homepage")),
            url=_text(item.get("html_url")),
            private=item.get("private") is True,
        ),
    )


def _text(value: object) -> str | None:
    """A non-empty string, or None (GitHub sends "" and null alike for unset fields)."""
    return value if isinstance(value, str) and value else None
