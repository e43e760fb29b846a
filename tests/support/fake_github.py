"""A stand-in for the part of the GitHub REST API that the GitHub source uses, on loopback.

It is a real HTTP/1.1 server (asyncio, in a thread of its own, so it serves while a test's
event loop or a benchmark's client is busy), built to serve thousands of requests with
injected latency to many concurrent clients: latency is a non-blocking sleep.

Build a world, inject faults, read the request log:

    with FakeGithub(latency_s=0.05) as gh:                 # or gh = FakeGithub().start()
        gh.add_user("octo")                                 # add_org("acme") for organisations
        gh.add_repo("octo/site", {"README.md": "# Site", ".repo-context.json": "{}"})
        settings = GithubSettings(api_url=gh.url)           # gh.url includes api_prefix
        ...
        gh.change_file("octo/site", "README.md", "# New")   # bumps pushed_at and the ETag
        gh.rename_repo("octo/site", "homepage")             # old name answers 301
        gh.fail(500, repo="octo/site", times=2)             # 403/429 with retry_after, slow()...
        gh.count(kind="contents", status=200)               # the log: requests(), stats()

What it emulates, as GitHub does it:
- GET /users/{u}, /orgs/{o}, /users/{u}/repos (public repositories, sorted by full_name),
  /orgs/{o}/repos (creation order; private ones only with the token), per_page (default 30,
  at most 100) and page, with a Link header (next, last, first, prev).
- GET /repos/{o}/{r}, /repos/{o}/{r}/readme and /repos/{o}/{r}/contents/{path} with ?ref=:
  the raw media type (Accept: application/vnd.github.raw[+json]) answers the bytes; the JSON
  form carries name, path, size and base64 content (content "" and encoding "none" above
  1 MB, like GitHub). The README is the first README* at the root, then .github/, then docs/.
- /repositories/{id}/...: where a renamed repository's old name redirects (301 + Location).
- ETag on every 200 (a hash of the body) and If-None-Match -> 304, with the Link header
  repeated unless link_on_304=False.
- x-ratelimit-{limit,remaining,reset,used,resource} on every answer; 304s are free; an
  exhausted budget answers 403 "API rate limit exceeded" until the (whole-second) reset.
- Private repositories are visible only with `Authorization: Bearer <token>` (or `token`);
  a wrong token is 401 "Bad credentials". Unknown or hidden things are 404 "Not Found".
- Users' own tokens (add_user_token): accepted beside the main token, GET /user names their
  owner, and each has a rate-limit budget of its own, as GitHub counts per token.
- GitHub Apps (add_app with the App's RSA public key, add_installation): POST
  /app/installations/{id}/access_tokens and GET /app/installations/{id} take an App JWT
  (RS256, verified with the key; iss the App id; at most ten minutes between iat and exp),
  answer 401 for a JWT that does not verify and 404 for an unknown installation, and mint
  tokens that live `installation_token_lifetime_s`. A minted token is accepted until it
  expires or is refused early (refuse_token); it spends its installation's budget (one per
  installation, whichever of its tokens is used); GET /user answers it 403, as GitHub does.
  minted(id) lists the tokens minted, LoggedRequest.authorization what each request sent.

Run it by hand: `python -m tests.support.fake_github --port 8765 --repos 1000 --latency-ms 50`.
Out of process, GET /_fake/stats returns the counters and POST /_fake/reset clears them;
POST /_fake/touch?repo=o/r&path=README.md changes a file (these are neither logged nor
rate limited).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import re
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

__all__ = [
    "SECONDARY_LIMIT_MESSAGE",
    "FakeAccount",
    "FakeGithub",
    "FakeRepo",
    "Fault",
    "LoggedRequest",
    "main",
    "populate",
    "repo_files",
    "running",
]

SECONDARY_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
DOCS = "https://docs.github.com/rest"
JSON_INLINE_LIMIT = 1024 * 1024
"""The JSON form of contents carries content only up to this size (GitHub: 1 MB)."""
_BASE_TIME = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
_README_DIRS = ("", ".github/", "docs/")


# -- the world -----------------------------------------------------------------------------


@dataclass
class FakeAccount:
    login: str
    kind: str
    """'User' or 'Organization'."""
    id: int


@dataclass
class FakeRepo:
    id: int
    owner: str
    name: str
    files: dict[str, bytes]
    private: bool = False
    default_branch: str = "main"
    description: str | None = None
    language: str | None = None
    topics: list[str] = field(default_factory=list)
    homepage: str | None = None
    created_at: datetime = _BASE_TIME
    updated_at: datetime = _BASE_TIME
    pushed_at: datetime | None = _BASE_TIME

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class Fault:
    """A misbehaviour for matching requests. `path` is a regex searched in the request path
    after the API prefix (query included); `repo` an owner/name. `times` None is forever."""

    path: str | None = None
    repo: str | None = None
    status: int | None = None
    """None: answer normally, after delay_s."""
    times: int | None = None
    delay_s: float = 0.0
    retry_after: float | None = None
    message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    location: str | None = None
    hits: int = 0

    def matches(self, target: str, repo: str | None) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.repo is not None and (repo is None or repo.lower() != self.repo.lower()):
            return False
        return self.path is None or re.search(self.path, target) is not None


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    """Without the API prefix and the query."""
    query: dict[str, str]
    kind: str
    """user, org, list, repo, readme, contents, rate_limit, mint, installation or unknown."""
    repo: str | None
    """owner/name as requested (or the current name for /repositories/{id})."""
    status: int
    authorization: str | None
    if_none_match: str | None
    accept: str | None
    body_bytes: int
    started: float
    finished: float


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    counts: bool = True
    """Whether it spends the rate limit budget (a 304 does not)."""


@dataclass(frozen=True)
class _Route:
    kind: str
    login: str | None = None
    repo: FakeRepo | None = None
    repo_name: str | None = None
    rest: str = ""
    moved_to: str | None = None


# -- the server ----------------------------------------------------------------------------


class FakeGithub:
    """The stand-in. Every public method is thread-safe; call them from anywhere."""

    def __init__(
        self,
        *,
        api_prefix: str = "",
        latency_s: float = 0.0,
        token: str | None = None,
        rate_limit: int = 5000,
        rate_window_s: float = 3600.0,
        link_on_304: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_prefix = api_prefix.rstrip("/")
        self.latency_s = latency_s
        """Added to every answer (a non-blocking sleep); change it at any time."""
        self.link_on_304 = link_on_304
        self._token = token
        self.token_owner = "operator"
        self._user_tokens: dict[str, str] = {}
        """A user's own token -> the login it belongs to."""
        self._token_budgets: dict[str, tuple[int, int]] = {}
        """A user's own token -> (remaining, reset): its own budget."""
        """The login GET /user answers for the token."""
        self._apps: dict[str, RSAPublicKey] = {}
        """App id (as the JWT's iss) -> its public key."""
        self._installations: dict[int, tuple[str, str]] = {}
        """Installation id -> (App id, the account it is installed on)."""
        self._minted: dict[str, tuple[int, float]] = {}
        """Installation token -> (installation id, epoch second it expires)."""
        self.installation_token_lifetime_s = 3600.0
        """How long tokens minted from now on live (GitHub: an hour)."""
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._accounts: dict[str, FakeAccount] = {}
        self._repos: dict[int, FakeRepo] = {}
        self._by_name: dict[str, int] = {}
        self._moved: dict[str, int] = {}
        self._faults: list[Fault] = []
        self._log: list[LoggedRequest] = []
        self._next_id = 1000
        self._clock = _BASE_TIME
        self._limit = rate_limit
        self._window_s = rate_window_s
        self._remaining = rate_limit
        self._reset = 0
        self._in_flight = 0
        self.max_in_flight = 0
        """Most requests handled at once since the last reset_log()."""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeGithub:
        """Listen (on a free port unless one was given); returns once it accepts."""
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name="fake-github", daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"fake GitHub did not start: {failure}")
        return self

    def stop(self) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        self._thread = None

    def __enter__(self) -> FakeGithub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        """scheme://host:port, without the API prefix."""
        return f"http://{self._host}:{self._port}"

    @property
    def url(self) -> str:
        """The API base URL (what GithubSettings.api_url takes), prefix included."""
        return self.origin + self.api_prefix

    def __repr__(self) -> str:
        return f"FakeGithub(url={self.url!r}, repos={len(self._repos)})"

    # -- building the world ----------------------------------------------------------------

    def add_user(self, login: str) -> FakeAccount:
        return self._add_account(login, "User")

    def add_org(self, login: str) -> FakeAccount:
        return self._add_account(login, "Organization")

    def remove_account(self, login: str) -> None:
        """Delete an account and its repositories: everything of it answers 404 from now."""
        with self._lock:
            self._accounts.pop(login.lower(), None)
            for repo_id, repo in list(self._repos.items()):
                if repo.full_name.split("/")[0].lower() == login.lower():
                    del self._repos[repo_id]
                    self._by_name.pop(repo.full_name.lower(), None)

    def add_repo(
        self,
        full_name: str,
        files: Mapping[str, bytes | str] | None = None,
        *,
        private: bool = False,
        default_branch: str = "main",
        description: str | None = None,
        language: str | None = None,
        topics: tuple[str, ...] | list[str] = (),
        homepage: str | None = None,
        pushed: bool = True,
    ) -> FakeRepo:
        """A repository of an existing account (added as a user if unknown). pushed=False
        leaves pushed_at null, as on a repository nobody pushed to."""
        owner, _, name = full_name.partition("/")
        with self._lock:
            if full_name.lower() in self._by_name:
                raise ValueError(f"{full_name} exists")
            account = self._accounts.get(owner.lower())
            if account is None:
                account = self._accounts[owner.lower()] = FakeAccount(owner, "User", self._id())
            self._clock += timedelta(seconds=1)
            repo = FakeRepo(
                id=self._id(),
                owner=account.login,
                name=name,
                files={path: _bytes(data) for path, data in (files or {}).items()},
                private=private,
                default_branch=default_branch,
                description=description,
                language=language,
                topics=list(topics),
                homepage=homepage,
                created_at=self._clock,
                updated_at=self._clock,
                pushed_at=self._clock if pushed else None,
            )
            self._repos[repo.id] = repo
            self._by_name[repo.full_name.lower()] = repo.id
            return repo

    def change_file(self, full_name: str, path: str, data: bytes | str | None) -> None:
        """Write (or with None delete) a file, as a push does: pushed_at moves on."""
        with self._lock:
            repo = self._repo(full_name)
            if data is None:
                repo.files.pop(path, None)
            else:
                repo.files[path] = _bytes(data)
            self._push(repo)

    def push(self, full_name: str) -> None:
        """A push that changes none of the files the source reads (pushed_at moves on)."""
        with self._lock:
            self._push(self._repo(full_name))

    def update_repo(self, full_name: str, **fields: Any) -> None:
        """Set metadata (description, language, topics, homepage, private, default_branch)."""
        with self._lock:
            repo = self._repo(full_name)
            for name, value in fields.items():
                if name not in {
                    "description",
                    "language",
                    "topics",
                    "homepage",
                    "private",
                    "default_branch",
                }:
                    raise ValueError(f"cannot set {name}")
                setattr(repo, name, list(value) if name == "topics" else value)
            self._clock += timedelta(minutes=1)
            repo.updated_at = self._clock

    def rename_repo(self, full_name: str, new_name: str) -> FakeRepo:
        """Rename ("name") or transfer ("owner/name"); the old name answers 301 from then on."""
        with self._lock:
            repo = self._repo(full_name)
            owner, _, name = new_name.rpartition("/")
            del self._by_name[repo.full_name.lower()]
            self._moved[repo.full_name.lower()] = repo.id
            repo.owner = self._accounts[owner.lower()].login if owner else repo.owner
            repo.name = name
            self._by_name[repo.full_name.lower()] = repo.id
            self._moved.pop(repo.full_name.lower(), None)
            self._clock += timedelta(minutes=1)
            repo.updated_at = self._clock
            return repo

    def repo(self, full_name: str) -> FakeRepo:
        with self._lock:
            return self._repo(full_name)

    @property
    def token(self) -> str | None:
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        """The token that private repositories require (None: nobody sees them)."""
        with self._lock:
            self._token = value

    def add_user_token(self, token: str, owner: str) -> None:
        """Accept `token` as `owner`'s own, with a budget apart from the main token's."""
        with self._lock:
            self._user_tokens[token] = owner

    def add_app(self, app_id: int, public_key: RSAPublicKey) -> None:
        """Accept JWTs of App `app_id` signed by the private half of `public_key`."""
        with self._lock:
            self._apps[str(app_id)] = public_key

    def add_installation(self, installation_id: int, app_id: int, account: str) -> None:
        """Install App `app_id` on `account` as installation `installation_id`."""
        with self._lock:
            self._installations[installation_id] = (str(app_id), account)

    def minted(self, installation_id: int) -> list[str]:
        """The tokens minted for the installation, oldest first."""
        with self._lock:
            return [t for t, (i, _) in self._minted.items() if i == installation_id]

    def refuse_token(self, token: str) -> None:
        """Expire an installation token now, early (GitHub may drop one before its hour)."""
        with self._lock:
            installation_id, _ = self._minted[token]
            self._minted[token] = (installation_id, 0.0)

    def set_rate_limit(self, limit: int, window_s: float = 3600.0) -> None:
        """A fresh budget of `limit` requests per window, starting now, for every token."""
        with self._lock:
            self._limit = limit
            self._window_s = window_s
            self._remaining = limit
            self._reset = math.ceil(time.time() + window_s)
            self._token_budgets = {t: (limit, self._reset) for t in self._user_tokens}
            for installation_id in self._installations:
                self._token_budgets[_installation_budget(installation_id)] = (limit, self._reset)

    def rate_remaining(self, token: str | None = None, *, installation: int | None = None) -> int:
        """What is left of the main budget, of a user's own token's or of an installation's."""
        with self._lock:
            if installation is not None:
                token = _installation_budget(installation)
            if token is None:
                return self._remaining
            return self._token_budgets.get(token, (self._limit, 0))[0]

    @property
    def rate_reset(self) -> int:
        """The epoch second at which the current budget renews."""
        return self._reset

    # -- faults ----------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail(
        self,
        status: int = 500,
        *,
        path: str | None = None,
        repo: str | None = None,
        times: int | None = None,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> Fault:
        """Answer `status` (500, 502, 403 ...) with GitHub's error body."""
        return self.add_fault(
            Fault(
                path=path,
                repo=repo,
                status=status,
                times=times,
                retry_after=retry_after,
                message=message,
            )
        )

    def throttle(
        self,
        status: int = 429,
        *,
        retry_after: float = 1.0,
        path: str | None = None,
        repo: str | None = None,
        times: int | None = 1,
    ) -> Fault:
        """403 or 429 with retry-after, as GitHub's limits answer."""
        return self.fail(
            status,
            path=path,
            repo=repo,
            times=times,
            retry_after=retry_after,
            message=SECONDARY_LIMIT_MESSAGE if status == 403 else "Too many requests",
        )

    def secondary_limit(
        self,
        *,
        retry_after: float | None = None,
        path: str | None = None,
        repo: str | None = None,
        times: int | None = 1,
    ) -> Fault:
        """GitHub's secondary rate limit: 403 with its message, retry-after only if given."""
        return self.fail(
            403,
            path=path,
            repo=repo,
            times=times,
            retry_after=retry_after,
            message=SECONDARY_LIMIT_MESSAGE,
        )

    def forbid(self, *, path: str | None = None, repo: str | None = None) -> Fault:
        """A real permission error: 403 without retry-after or rate-limit message."""
        return self.fail(
            403, path=path, repo=repo, message="Resource not accessible by integration"
        )

    def slow(
        self,
        delay_s: float,
        *,
        path: str | None = None,
        repo: str | None = None,
        times: int | None = None,
    ) -> Fault:
        """Answer normally, but delay_s later."""
        return self.add_fault(Fault(path=path, repo=repo, delay_s=delay_s, times=times))

    def redirect(
        self,
        location: str,
        *,
        status: int = 302,
        path: str | None = None,
        repo: str | None = None,
        times: int | None = None,
    ) -> Fault:
        """Answer `status` with Location: location (e.g. another host)."""
        return self.add_fault(
            Fault(path=path, repo=repo, status=status, times=times, location=location)
        )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # -- the request log -------------------------------------------------------------------

    def requests(
        self,
        *,
        kind: str | None = None,
        status: int | None = None,
        repo: str | None = None,
    ) -> list[LoggedRequest]:
        """Logged requests, oldest first, filtered by kind, status and repository."""
        with self._lock:
            log = list(self._log)
        return [
            r
            for r in log
            if (kind is None or r.kind == kind)
            and (status is None or r.status == status)
            and (repo is None or (r.repo or "").lower() == repo.lower())
        ]

    def count(
        self, *, kind: str | None = None, status: int | None = None, repo: str | None = None
    ) -> int:
        return len(self.requests(kind=kind, status=status, repo=repo))

    def stats(self) -> dict[str, Any]:
        """Totals: requests, by kind, by status, body bytes sent, most in flight at once."""
        with self._lock:
            log = list(self._log)
            max_in_flight = self.max_in_flight
            remaining = self._remaining
        return {
            "requests": len(log),
            "by_kind": dict(Counter(r.kind for r in log)),
            "by_status": {str(k): v for k, v in Counter(r.status for r in log).items()},
            "body_bytes": sum(r.body_bytes for r in log),
            "max_in_flight": max_in_flight,
            "rate_remaining": remaining,
        }

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()
            self.max_in_flight = self._in_flight

    # -- internals: the world --------------------------------------------------------------

    def _add_account(self, login: str, kind: str) -> FakeAccount:
        with self._lock:
            account = FakeAccount(login, kind, self._id())
            self._accounts[login.lower()] = account
            return account

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _repo(self, full_name: str) -> FakeRepo:
        repo_id = self._by_name.get(full_name.lower())
        if repo_id is None:
            raise KeyError(f"no repository {full_name}")
        return self._repos[repo_id]

    def _push(self, repo: FakeRepo) -> None:
        self._clock += timedelta(minutes=1)
        repo.pushed_at = repo.updated_at = self._clock

    # -- internals: HTTP -------------------------------------------------------------------

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:  # reported to start(); the thread must not die silently
            failure.append(exc)
            ready.set()

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(
            self._connection, self._host, self._port, backlog=4096, limit=256 * 1024
        )
        self._port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for writer in list(self._writers):
                writer.close()
            await server.wait_closed()
            await asyncio.sleep(0)  # let the transports finish closing

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
                parts = request_line.split(" ")
                if len(parts) != 3:
                    writer.write(_render(400, {}, b"", keep_alive=False))
                    return
                method, target, version = parts
                headers: dict[str, str] = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                if length:
                    await reader.readexactly(length)
                answer = await self._handle(method, target, headers)
                keep_alive = version == "HTTP/1.1" and headers.get("connection") != "close"
                writer.write(_render(answer.status, answer.headers, answer.body, keep_alive))
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            # Shutting down. A connection task must not end cancelled: asyncio's stream
            # callback would log its CancelledError as an error.
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _handle(self, method: str, target: str, headers: dict[str, str]) -> _Answer:
        split = urlsplit(target)
        if split.path.startswith("/_fake/"):
            return self._control(method, split.path, dict(parse_qsl(split.query)))
        started = time.time()
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            route_path = split.path
            prefixed = route_path.startswith(self.api_prefix + "/") or not self.api_prefix
            route_path = route_path[len(self.api_prefix) :] if prefixed else route_path
            route = self._route(route_path) if prefixed else _Route("unknown")
            repo_name = route.repo.full_name if route.repo else route.repo_name
            local_target = route_path + (f"?{split.query}" if split.query else "")
            delay, fault = self._faults_for(local_target, repo_name)
        try:
            await asyncio.sleep(self.latency_s + delay)
            with self._lock:
                answer = self._answer(method, split, route, headers, fault)
                self._log.append(
                    LoggedRequest(
                        method=method,
                        path=route_path,
                        query=dict(parse_qsl(split.query)),
                        kind=route.kind,
                        repo=repo_name,
                        status=answer.status,
                        authorization=headers.get("authorization"),
                        if_none_match=headers.get("if-none-match"),
                        accept=headers.get("accept"),
                        body_bytes=len(answer.body),
                        started=started,
                        finished=time.time(),
                    )
                )
            return answer
        finally:
            with self._lock:
                self._in_flight -= 1

    def _faults_for(self, target: str, repo: str | None) -> tuple[float, Fault | None]:
        """Total extra delay and the fault that decides the answer (if any); uses them up."""
        delay = 0.0
        decisive: Fault | None = None
        for fault in self._faults:
            if fault.status is not None and decisive is not None:
                continue
            if not fault.matches(target, repo):
                continue
            fault.hits += 1
            delay += fault.delay_s
            if fault.status is not None:
                decisive = fault
        return delay, decisive

    # -- internals: answers (called with the lock held) ------------------------------------

    def _answer(
        self,
        method: str,
        split: Any,
        route: _Route,
        headers: dict[str, str],
        fault: Fault | None,
    ) -> _Answer:
        now = time.time()
        if now >= self._reset:
            self._remaining = self._limit
            self._reset = math.ceil(now + self._window_s)
        authorization = headers.get("authorization", "")
        presented = authorization.partition(" ")[2].strip() if authorization else None
        if route.kind in ("mint", "installation"):
            return (
                self._fault_answer(fault) if fault else self._app_answer(method, route, presented)
            )
        own = presented if presented in self._user_tokens else None
        minted = self._minted.get(presented or "")
        installation = minted[0] if minted is not None and now < minted[1] else None
        # A user's own token spends its own budget; an installation's tokens share theirs.
        budget = own or (_installation_budget(installation) if installation is not None else None)
        if budget is not None:
            shared_budget = (self._remaining, self._reset)
            self._remaining, self._reset = self._token_budgets.get(budget, (self._limit, 0))
            if now >= self._reset:
                self._remaining = self._limit
                self._reset = math.ceil(now + self._window_s)
        try:
            return self._answer_with_budget(
                method, split, route, headers, fault, presented, own, installation
            )
        finally:
            if budget is not None:
                self._token_budgets[budget] = (self._remaining, self._reset)
                self._remaining, self._reset = shared_budget

    def _app_answer(self, method: str, route: _Route, presented: str | None) -> _Answer:
        """The App endpoints: a verified JWT, then the installation or a new token for it."""
        expected = "POST" if route.kind == "mint" else "GET"
        if method != expected:
            return _error(404, "Not Found")
        app_id = self._verified_app(presented)
        if app_id is None:
            return _error(401, "A JSON web token could not be decoded")
        installation_id = int(route.login or "0")
        installed = self._installations.get(installation_id)
        if installed is None or installed[0] != app_id:
            return _error(404, "Not Found")
        if route.kind == "installation":
            account = self._accounts.get(installed[1].lower())
            login = account.login if account else installed[1]
            kind = account.kind if account else "User"
            return _json_answer(
                {
                    "id": installation_id,
                    "app_id": int(app_id),
                    "account": {"login": login, "type": kind},
                }
            )
        token = f"ghs_{secrets.token_hex(18)}"
        expires_at = time.time() + self.installation_token_lifetime_s
        self._minted[token] = (installation_id, expires_at)
        when = datetime.fromtimestamp(expires_at, UTC).isoformat(timespec="seconds")
        return _json_answer({"token": token, "expires_at": when.replace("+00:00", "Z")}, status=201)

    def _verified_app(self, presented: str | None) -> str | None:
        """The App id of a JWT that one of the Apps signed and that is valid now, else None."""
        if not presented:
            return None
        try:
            app_id = str(jwt.decode(presented, options={"verify_signature": False})["iss"])
            claims = jwt.decode(
                presented,
                self._apps[app_id],
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
            )
        except (jwt.PyJWTError, KeyError, TypeError):
            return None
        if int(claims["exp"]) - int(claims["iat"]) > 660:
            return None  # GitHub: "Expiration time' claim ('exp') is too far in the future"
        return app_id

    def _answer_with_budget(
        self,
        method: str,
        split: Any,
        route: _Route,
        headers: dict[str, str],
        fault: Fault | None,
        presented: str | None,
        own: str | None,
        installation: int | None = None,
    ) -> _Answer:
        authenticated = bool(presented) and (
            presented == self._token or own is not None or installation is not None
        )
        known = self._token is not None or self._user_tokens or self._minted
        if presented and known and not authenticated:
            answer = _error(401, "Bad credentials")
        elif fault is not None:
            answer = self._fault_answer(fault)
        elif self._remaining <= 0:
            answer = _error(403, "API rate limit exceeded for 127.0.0.1.")
            answer.counts = False
        elif method not in ("GET", "HEAD"):
            answer = _error(404, "Not Found")
        else:
            query = dict(parse_qsl(split.query))
            if route.kind == "me" and installation is not None:
                answer = _error(403, "Resource not accessible by integration")
            else:
                answer = self._get(
                    route, query, headers.get("accept", ""), authenticated, split, owner=own
                )
            answer = self._conditional(answer, headers.get("if-none-match"))
        if answer.counts and answer.status != 304 and answer.status < 500:
            self._remaining = max(0, self._remaining - 1)
        answer.headers.update(
            {
                "x-ratelimit-limit": str(self._limit),
                "x-ratelimit-remaining": str(self._remaining),
                "x-ratelimit-reset": str(self._reset),
                "x-ratelimit-used": str(self._limit - self._remaining),
                "x-ratelimit-resource": "core",
            }
        )
        if method == "HEAD":
            answer.body = b""
        return answer

    def _fault_answer(self, fault: Fault) -> _Answer:
        if fault.location is not None:
            answer = _error(fault.status or 302, "Moved")
            answer.headers["location"] = fault.location
        else:
            status = fault.status or 500
            answer = _error(status, fault.message or HTTPStatus(status).phrase)
        if fault.retry_after is not None:
            answer.headers["retry-after"] = f"{fault.retry_after:g}"
        answer.headers.update(fault.headers)
        answer.counts = False
        return answer

    def _conditional(self, answer: _Answer, if_none_match: str | None) -> _Answer:
        if answer.status != 200:
            return answer
        etag = answer.headers.setdefault("etag", _etag(answer.body, weak=True))
        if if_none_match and _etag_matches(etag, if_none_match):
            kept = {"etag": etag}
            if self.link_on_304 and "link" in answer.headers:
                kept["link"] = answer.headers["link"]
            return _Answer(304, b"", kept, counts=False)
        return answer

    def _route(self, path: str) -> _Route:
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if parts == ["rate_limit"]:
            return _Route("rate_limit")
        if parts == ["user"]:
            return _Route("me")
        if len(parts) in (3, 4) and parts[:2] == ["app", "installations"] and parts[2].isdigit():
            if len(parts) == 3:
                return _Route("installation", login=parts[2])
            if parts[3] == "access_tokens":
                return _Route("mint", login=parts[2])
        if len(parts) in (2, 3) and parts[0] in ("users", "orgs"):
            if len(parts) == 2:
                return _Route("user" if parts[0] == "users" else "org", login=parts[1])
            if parts[2] == "repos":
                return _Route("list", login=parts[1], rest=parts[0])
        if len(parts) >= 3 and parts[0] == "repos":
            name = f"{parts[1]}/{parts[2]}"
            rest = "/".join(parts[3:])
            repo_id = self._by_name.get(name.lower())
            if repo_id is None and name.lower() in self._moved:
                moved = self._moved[name.lower()]
                return _Route(_kind(rest), repo_name=name, rest=rest, moved_to=str(moved))
            repo = self._repos.get(repo_id) if repo_id is not None else None
            return _Route(_kind(rest), repo=repo, repo_name=name, rest=rest)
        if len(parts) >= 2 and parts[0] == "repositories" and parts[1].isdigit():
            repo = self._repos.get(int(parts[1]))
            rest = "/".join(parts[2:])
            return _Route(
                _kind(rest), repo=repo, repo_name=repo.full_name if repo else None, rest=rest
            )
        return _Route("unknown")

    def _get(
        self,
        route: _Route,
        query: dict[str, str],
        accept: str,
        authenticated: bool,
        split: Any,
        *,
        owner: str | None = None,
    ) -> _Answer:
        if route.kind in ("user", "org"):
            account = self._accounts.get((route.login or "").lower())
            if account is None or (route.kind == "org" and account.kind != "Organization"):
                return _error(404, "Not Found")
            return _json_answer(self._account_json(account))
        if route.kind == "list":
            return self._list(route, query, authenticated, split)
        if route.kind == "me":  # the account the token belongs to
            if not authenticated:
                return _error(401, "Requires authentication")
            return _json_answer({"login": owner or self.token_owner, "type": "User"})
        if route.kind == "rate_limit":
            answer = _json_answer({"resources": {"core": {"remaining": self._remaining}}})
            answer.counts = False
            return answer
        if route.moved_to is not None:
            location = f"{self.url}/repositories/{route.moved_to}"
            location += f"/{route.rest}" if route.rest else ""
            location += f"?{split.query}" if split.query else ""
            answer = _json_answer(
                {"message": "Moved Permanently", "url": location, "documentation_url": DOCS},
                status=301,
            )
            answer.headers["location"] = location
            return answer
        repo = route.repo
        if repo is None or (repo.private and not authenticated):
            return _error(404, "Not Found")
        ref = query.get("ref")
        if route.kind != "repo" and ref not in (None, "", repo.default_branch):
            return _error(404, f"No commit found for the ref {ref}")
        raw = "raw" in accept
        if route.kind == "repo":
            return _json_answer(self._repo_json(repo))
        if route.kind == "readme":
            path = _find_readme(repo.files)
            if path is None:
                return _error(404, "Not Found")
            return self._file(repo, path, raw)
        if route.kind == "contents":
            path = route.rest.partition("/")[2]
            if path in repo.files:
                return self._file(repo, path, raw)
            listing = self._directory(repo, path)
            return _json_answer(listing) if listing else _error(404, "Not Found")
        return _error(404, "Not Found")

    def _list(
        self, route: _Route, query: dict[str, str], authenticated: bool, split: Any
    ) -> _Answer:
        account = self._accounts.get((route.login or "").lower())
        org_route = route.rest == "orgs"
        if account is None or (org_route and account.kind != "Organization"):
            return _error(404, "Not Found")
        owned = [r for r in self._repos.values() if r.owner.lower() == account.login.lower()]
        if org_route:
            # GitHub shows an organisation's private repositories to members only.
            visible = [r for r in owned if authenticated or not r.private]
            visible.sort(key=lambda r: r.id)
        else:
            visible = sorted((r for r in owned if not r.private), key=lambda r: r.full_name.lower())
        try:
            per_page = min(100, max(1, int(query.get("per_page", "30"))))
            page = max(1, int(query.get("page", "1")))
        except ValueError:
            return _error(422, "Invalid pagination")
        chunk = visible[(page - 1) * per_page : page * per_page]
        answer = _json_answer([self._repo_json(r) for r in chunk])
        last = max(1, math.ceil(len(visible) / per_page))
        links = []
        base = self.origin + split.path

        def link(n: int, rel: str) -> str:
            params = dict(query, per_page=str(per_page), page=str(n))
            return f'<{base}?{urlencode(params)}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(page - 1, "prev"), link(1, "first")]
        if links:
            answer.headers["link"] = ", ".join(links)
        return answer

    def _file(self, repo: FakeRepo, path: str, raw: bool) -> _Answer:
        data = repo.files[path]
        if raw:
            answer = _Answer(
                200, data, {"content-type": "application/vnd.github.raw; charset=utf-8"}
            )
            answer.headers["etag"] = _etag(data, weak=False)
            answer.headers["x-github-media-type"] = "github.v3; param=raw"
            return answer
        inline = len(data) <= JSON_INLINE_LIMIT
        encoded = base64.encodebytes(data).decode() if inline else ""
        doc = {
            "type": "file",
            "encoding": "base64" if inline else "none",
            "size": len(data),
            "name": path.rpartition("/")[2],
            "path": path,
            "content": encoded,
            "sha": _git_sha(data),
            "url": f"{self.url}/repos/{repo.full_name}/contents/{path}",
            "html_url": f"https://github.com/{repo.full_name}/blob/{repo.default_branch}/{path}",
        }
        return _json_answer(doc)

    def _directory(self, repo: FakeRepo, path: str) -> list[dict[str, Any]]:
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        names = sorted({p[len(prefix) :].split("/")[0] for p in repo.files if p.startswith(prefix)})
        return [
            {
                "name": name,
                "path": prefix + name,
                "type": "file" if prefix + name in repo.files else "dir",
            }
            for name in names
        ]

    def _account_json(self, account: FakeAccount) -> dict[str, Any]:
        return {
            "login": account.login,
            "id": account.id,
            "type": account.kind,
            "url": f"{self.url}/users/{account.login}",
            "html_url": f"https://github.com/{account.login}",
            "repos_url": f"{self.url}/users/{account.login}/repos",
            "public_repos": sum(
                1 for r in self._repos.values() if r.owner == account.login and not r.private
            ),
        }

    def _repo_json(self, repo: FakeRepo) -> dict[str, Any]:
        owner = self._accounts[repo.owner.lower()]
        return {
            "id": repo.id,
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "visibility": "private" if repo.private else "public",
            "owner": {"login": owner.login, "id": owner.id, "type": owner.kind},
            "html_url": f"https://github.com/{repo.full_name}",
            "url": f"{self.url}/repos/{repo.full_name}",
            "description": repo.description,
            "fork": False,
            "archived": False,
            "homepage": repo.homepage,
            "language": repo.language,
            "topics": repo.topics,
            "default_branch": repo.default_branch,
            "size": sum(len(d) for d in repo.files.values()) // 1024,
            "created_at": _iso(repo.created_at),
            "updated_at": _iso(repo.updated_at),
            "pushed_at": _iso(repo.pushed_at) if repo.pushed_at else None,
        }

    def _control(self, method: str, path: str, query: dict[str, str]) -> _Answer:
        if path == "/_fake/stats":
            return _json_answer(self.stats())
        if path == "/_fake/reset" and method == "POST":
            self.reset_log()
            return _Answer(204)
        if path == "/_fake/touch" and method == "POST":
            try:
                repo = self.repo(query["repo"])
                file = query.get("path", "README.md")
                self.change_file(repo.full_name, file, repo.files.get(file, b"") + b"\nchanged\n")
            except KeyError:
                return _error(404, "Not Found")
            return _Answer(204)
        return _error(404, "Not Found")


# -- helpers -------------------------------------------------------------------------------


def _installation_budget(installation_id: int) -> str:
    return f"installation:{installation_id}"


def _kind(rest: str) -> str:
    if not rest:
        return "repo"
    if rest == "readme":
        return "readme"
    if rest == "contents" or rest.startswith("contents/"):
        return "contents"
    return "unknown"


def _find_readme(files: Mapping[str, bytes]) -> str | None:
    for folder in _README_DIRS:
        names = sorted(
            (p for p in files if p.startswith(folder) and "/" not in p[len(folder) :]),
            key=lambda p: (p.lower() != f"{folder}readme.md", p.lower()),
        )
        for path in names:
            if path[len(folder) :].lower().startswith("readme"):
                return path
    return None


def _json_answer(doc: Any, status: int = 200) -> _Answer:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return _Answer(status, body, {"content-type": "application/json; charset=utf-8"})


def _error(status: int, message: str) -> _Answer:
    return _json_answer({"message": message, "documentation_url": DOCS}, status=status)


def _etag(body: bytes, *, weak: bool) -> str:
    digest = hashlib.sha256(body).hexdigest()[:40]
    return f'W/"{digest}"' if weak else f'"{digest}"'


def _etag_matches(etag: str, header: str) -> bool:
    def bare(tag: str) -> str:
        tag = tag.strip()
        return tag[2:] if tag.startswith("W/") else tag

    return header.strip() == "*" or bare(etag) in {bare(t) for t in header.split(",")}


def _git_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def _render(status: int, headers: Mapping[str, str], body: bytes, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "server: fake-github"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if status != 304 and status != 204:
        lines.append(f"content-length: {len(body)}")
    lines.append("connection: " + ("keep-alive" if keep_alive else "close"))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- a ready-made world, and the command line ----------------------------------------------


def repo_files(owner: str, name: str, index: int) -> dict[str, bytes]:
    """The four files a typical repository carries, a few KB in all."""
    context = {
        "name": name,
        "summary": f"Project {index} of {owner}: a service that does thing {index}.",
        "skills": ["python", "grpc", f"skill-{index % 17}"],
        "tech": ["nats", "httpx"],
    }
    return {
        ".repo-context.json": json.dumps(context, indent=2).encode(),
        "README.md": f"# {name}\n\n{'A line of README text. ' * 40}\n".encode(),
        "ARCHITECTURE.md": f"# {name}: architecture\n\n{'Components and flows. ' * 60}\n".encode(),
        "SKILLS-INDEX.md": f"# Skills\n\n- skill-{index % 17}\n- python\n".encode(),
    }


def populate(gh: FakeGithub, owner: str = "octo", repos: int = 100, *, org: bool = False) -> None:
    """An account with `repos` repositories named repo-0000..., each with repo_files()."""
    (gh.add_org if org else gh.add_user)(owner)
    for i in range(repos):
        name = f"repo-{i:04d}"
        gh.add_repo(
            f"{owner}/{name}",
            repo_files(owner, name, i),
            description=f"Repository {i}",
            language="Python",
            topics=["demo", f"t{i % 5}"],
        )


@contextlib.contextmanager
def running(**options: Any) -> Iterator[FakeGithub]:
    """`with running(latency_s=0.05) as gh:` — start and always stop a stand-in."""
    gh = FakeGithub(**options).start()
    try:
        yield gh
    finally:
        gh.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a GitHub REST API stand-in on loopback.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--repos", type=int, default=100)
    parser.add_argument("--user", default="octo")
    parser.add_argument("--org", action="store_true", help="make the account an organisation")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--prefix", default="", help="API path prefix, e.g. /api/v3 (GHE)")
    parser.add_argument("--token", default=None, help="token that private repositories require")
    parser.add_argument("--rate-limit", type=int, default=5000)
    args = parser.parse_args(argv)
    gh = FakeGithub(
        api_prefix=args.prefix,
        latency_s=args.latency_ms / 1000,
        token=args.token,
        rate_limit=args.rate_limit,
        port=args.port,
    )
    populate(gh, args.user, args.repos, org=args.org)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with gh:
        print(f"FAKE_GITHUB_URL={gh.url}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
