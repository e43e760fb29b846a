"""One GET against the GitHub API, done properly: the shared client, the concurrency bound,
rate limits, retries, redirects and a cap on how much of a body is read.

Each credential (github_credentials) has its own lane: its Authorization, its RateLimiter
(shared with the other replicas through the budget bucket when one is given) and its bound
on requests in flight, since GitHub counts both per token (per installation for a GitHub
App's, whatever token it has this hour). One credential's exhausted
budget or pause never holds back another's requests.

Callers get a Reply for 2xx, 304 and 404 (the answers they interpret); everything else is
retried or turned into a SourceError whose message names the request by path only, so it
never carries the token (nor any userinfo of the API URL). Each GET, retries and redirects
included, is a CLIENT span carrying the path (no query) and the final status, never the
error text.
Every HTTP exchange (each retry and redirect hop) counts by status in
contextmesh_github_requests_total, and the shared token's budget left in
contextmesh_github_rate_limit_remaining.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
from collections.abc import Callable

import httpx
from nats.js.kv import KeyValue
from opentelemetry.trace import SpanKind, Status, StatusCode

from meshkit.config import GithubSettings
from meshkit.metrics import GITHUB_RATE_LIMIT_REMAINING, GITHUB_REQUESTS
from meshkit.telemetry import tracer
from syncsvc.sources.base import SourceError
from syncsvc.sources.github_auth import ApiTokenAuth, InstallationAuth
from syncsvc.sources.github_budget import SharedBudget
from syncsvc.sources.github_concurrency import AdjustableLimit
from syncsvc.sources.github_credentials import SHARED, Credential
from syncsvc.sources.github_limits import GithubPacing, RateLimiter, parse_retry_after
from syncsvc.sources.github_transport import ShardedTransport

__all__ = ["GithubHttp", "Reply", "build_client"]

logger = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
USER_AGENT = "contextmesh-syncsvc"
ERROR_BODY_CAP = 64 * 1024
"""Error bodies are read only far enough to find GitHub's message."""
MAX_REDIRECTS = 3
"""Redirect hops followed per request (renamed repositories answer 301)."""
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclasses.dataclass(frozen=True)
class Reply:
    """The final answer to a GET (after redirects)."""

    status: int
    headers: httpx.Headers
    body: bytes
    """Empty for a 304 and for a body over the cap."""
    over_cap: bool = False
    size: int = 0
    """Body size: exact when the server sent Content-Length, else what was read."""
    head: bytes = b""
    """For a body over the cap, its first `keep_head` bytes (see GithubHttp.get)."""
    redirected: bool = False


@dataclasses.dataclass(frozen=True)
class _Retry:
    problem: str
    delay_s: float
    pause_all: bool = False
    """The delay is GitHub's request to slow down: hold back every request, not just this."""
    secondary: bool = False


@dataclasses.dataclass(frozen=True)
class _Lane:
    """What requests sent with one credential share."""

    credential: Credential
    auth: ApiTokenAuth | InstallationAuth
    limiter: RateLimiter
    in_flight: AdjustableLimit


def build_client(settings: GithubSettings, *, concurrency: int) -> httpx.AsyncClient:
    """The process's one client for GitHub: `concurrency` connections, kept alive, spread over
    small pools (see github_transport for why)."""
    return httpx.AsyncClient(
        transport=ShardedTransport(concurrency),
        timeout=settings.timeout_s,
        follow_redirects=False,
    )


class GithubHttp:
    """GETs against one GitHub API with the process's limits. One instance per process."""

    def __init__(
        self,
        settings: GithubSettings,
        *,
        concurrency: int,
        client: httpx.AsyncClient | None = None,
        pacing: GithubPacing | None = None,
        budgets: KeyValue | None = None,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        """`concurrency` sizes the connection pool and, without `in_flight`, bounds each
        credential's requests in flight; `in_flight` gives that bound as it is now (this
        replica's part of the budget, see syncsvc.replicas). `budgets` is the bucket that
        shares each credential's rate limit with the other replicas."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.api_url = httpx.URL(settings.api_url.rstrip("/"))
        self._pacing = pacing or GithubPacing()
        self._settings = settings
        self._max_retries = settings.max_retries
        self._timeout = httpx.Timeout(settings.timeout_s)
        self._owns_client = client is None
        self._client = client or build_client(settings, concurrency=concurrency)
        self._budgets = budgets
        self._in_flight = in_flight or (lambda: concurrency)
        self._lanes: dict[str, _Lane] = {}
        self.shared = Credential(settings.token, SHARED)
        self._rng = random.Random()

    def _lane(self, credential: Credential) -> _Lane:
        lane = self._lanes.get(credential.id)
        if lane is None:
            shared = (
                SharedBudget(self._budgets, credential.id) if self._budgets is not None else None
            )
            installation = credential.installation
            lane = _Lane(
                credential,
                InstallationAuth(installation, self.api_url, self._client)
                if installation is not None
                else ApiTokenAuth(credential.token, self.api_url),
                RateLimiter(
                    reserve=self._settings.rate_limit_reserve, pacing=self._pacing, shared=shared
                ),
                AdjustableLimit(self._in_flight),
            )
            self._lanes[credential.id] = lane
        return lane

    def url(self, path: str, params: dict[str, str | int] | None = None) -> httpx.URL:
        """An API URL from an already quoted path, keeping the base's path prefix (GHE)."""
        return httpx.URL(f"{self.api_url}{path}", params=params)

    async def installation_account(self, credential: Credential) -> str | None:
        """The login (lower case) of the account an installation credential's App is
        installed on; None for any other credential."""
        if credential.installation is None:
            return None
        return await credential.installation.account(self._client)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def get(
        self,
        url: httpx.URL,
        *,
        accept: str,
        etag: str | None = None,
        max_body: int | None = None,
        keep_head: int = 0,
        credential: Credential | None = None,
    ) -> Reply:
        """GET url (If-None-Match: etag when given) with `credential` (default: the shared
        token); follow redirects, retry what may pass.

        A 2xx body longer than max_body is not read: the Reply says over_cap instead, with
        the body's first keep_head bytes in `head` (for a caller that needs a peek).
        """
        with tracer(__name__).start_as_current_span(
            "GitHub GET",
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": "GET", "url.path": url.path},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                lane = self._lane(credential or self.shared)
                reply = await self._get_clean(lane, url, accept, etag, (max_body, keep_head))
            except SourceError:
                span.set_status(Status(StatusCode.ERROR, "SourceError"))
                raise
            span.set_attribute("http.response.status_code", reply.status)
            return reply

    async def _get_clean(
        self,
        lane: _Lane,
        url: httpx.URL,
        accept: str,
        etag: str | None,
        limits: tuple[int | None, int],
    ) -> Reply:
        """_get, with the token scrubbed from any error GitHub's message brought along."""
        try:
            return await self._get(lane, url, accept, etag, limits)
        except SourceError as exc:
            # GitHub's own message is part of some errors: make sure no token rides along.
            message = str(exc)
            for token in lane.credential.secrets():
                message = message.replace(token, "***")
            if message == str(exc):
                raise
            clean = SourceError(message, transient=exc.transient, retry_after_s=exc.retry_after_s)
        raise clean  # outside the except block, so the original is not chained to it

    async def _get(
        self,
        lane: _Lane,
        url: httpx.URL,
        accept: str,
        etag: str | None,
        limits: tuple[int | None, int],
    ) -> Reply:
        headers = {
            "Accept": accept,
            "User-Agent": USER_AGENT,
            "X-GitHub-Api-Version": API_VERSION,
        }
        if etag:
            headers["If-None-Match"] = etag
        target = _show(url)
        current = url
        hops = 0
        attempt = 0
        secondary_hits = 0
        while True:
            try:
                reply = await self._exchange(lane, current, headers, limits)
            except httpx.TimeoutException:
                retry = _Retry("timed out", self._backoff(attempt + 1))
            except httpx.RequestError as exc:  # connection, protocol and decoding errors
                problem = f"request failed ({type(exc).__name__})"
                retry = _Retry(problem, self._backoff(attempt + 1))
            else:
                if reply.status in _REDIRECTS:
                    hops += 1
                    current = self._follow(current, reply, hops, target)
                    continue
                decision = self._classify(lane, reply, target, attempt + 1, secondary_hits)
                if decision is None:
                    return dataclasses.replace(reply, redirected=hops > 0)
                retry = decision
                secondary_hits += retry.secondary
            attempt += 1
            if attempt > self._max_retries:
                raise SourceError(
                    f"GitHub GET {target}: {retry.problem}; gave up after {attempt} attempts",
                    transient=True,
                )
            if retry.delay_s > self._pacing.max_wait_s:
                raise SourceError(
                    f"GitHub GET {target}: {retry.problem}; asked to wait {retry.delay_s:.0f} s, "
                    "longer than this worker waits",
                    transient=True,
                    retry_after_s=retry.delay_s,
                )
            logger.warning(
                "GitHub GET %s: %s; retry %d of %d in %.2f s",
                target,
                retry.problem,
                attempt,
                self._max_retries,
                retry.delay_s,
            )
            if retry.pause_all:
                # The next slot() of every request with this credential, on every replica
                # once shared, waits it out.
                lane.limiter.pause(retry.delay_s)
                await lane.limiter.share()
            elif retry.delay_s > 0:
                await asyncio.sleep(retry.delay_s)

    async def _exchange(
        self,
        lane: _Lane,
        url: httpx.URL,
        headers: dict[str, str],
        limits: tuple[int | None, int],
    ) -> Reply:
        async with lane.in_flight.hold(), lane.limiter.slot():
            request = self._client.build_request("GET", url, headers=headers, timeout=self._timeout)
            try:
                response = await self._client.send(
                    request, auth=lane.auth, stream=True, follow_redirects=False
                )
            except httpx.RequestError:
                GITHUB_REQUESTS.labels("error").inc()
                raise
            GITHUB_REQUESTS.labels(str(response.status_code)).inc()
            try:
                lane.limiter.observe(response.headers)
                await lane.limiter.share()
                remaining = lane.limiter.remaining
                if remaining is not None and lane.credential.source == SHARED:
                    GITHUB_RATE_LIMIT_REMAINING.set(remaining)
                if response.status_code == 304 or response.status_code in _REDIRECTS:
                    # Read to the end (nothing, or a short note) so the connection is reused.
                    await _read_capped(response, ERROR_BODY_CAP, 0)
                    return Reply(response.status_code, response.headers, b"")
                max_body, keep_head = limits if response.is_success else (ERROR_BODY_CAP, 0)
                body, size, over = await _read_capped(response, max_body, keep_head)
                if over:
                    return Reply(response.status_code, response.headers, b"", True, size, body)
                return Reply(response.status_code, response.headers, body, size=size)
            finally:
                await response.aclose()

    def _follow(self, current: httpx.URL, reply: Reply, hops: int, target: str) -> httpx.URL:
        location = reply.headers.get("location")
        if not location:
            raise SourceError(
                f"GitHub GET {target}: HTTP {reply.status} without a Location", transient=False
            )
        if hops > MAX_REDIRECTS:
            raise SourceError(
                f"GitHub GET {target}: more than {MAX_REDIRECTS} redirects",
                transient=False,
            )
        nxt = current.join(location)
        if nxt.scheme not in ("http", "https") or (
            current.scheme == "https" and nxt.scheme != "https"
        ):
            raise SourceError(
                f"GitHub GET {target}: refused a redirect to a {nxt.scheme} URL", transient=False
            )
        logger.info("GitHub GET %s: HTTP %d, following to %s", target, reply.status, _show(nxt))
        return nxt

    def _classify(
        self, lane: _Lane, reply: Reply, target: str, attempt: int, secondary_hits: int
    ) -> _Retry | None:
        """None for an answer the caller reads; a _Retry for one worth another try; raises
        SourceError for one that no retry will change."""
        status = reply.status
        if status < 400 or status == 404:
            return None
        retry_after = parse_retry_after(reply.headers)
        message = _github_message(reply.body)
        if status in (403, 429):
            if retry_after is not None:
                return _Retry(
                    f"rate limited (HTTP {status}, retry-after {retry_after:g} s)",
                    retry_after,
                    pause_all=True,
                )
            if reply.headers.get("x-ratelimit-remaining") == "0":
                # The limiter has seen remaining=0 and holds the next slot until the reset.
                return _Retry(f"rate limit exhausted (HTTP {status})", self._backoff(attempt))
            lowered = message.lower()
            if "secondary rate limit" in lowered or "abuse" in lowered:
                wait = self._pacing.secondary_wait_s * 2**secondary_hits
                return _Retry(
                    f"secondary rate limit (HTTP {status})", wait, pause_all=True, secondary=True
                )
            if status == 429:
                return _Retry("too many requests (HTTP 429)", self._backoff(attempt))
            raise SourceError(f"GitHub GET {target}: HTTP 403 {message}".rstrip(), transient=False)
        if status >= 500:
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            return _Retry(f"HTTP {status}", delay)
        if status == 401:
            fix = (
                "a freshly minted installation token was refused: check the App's installation"
                if lane.credential.installation is not None
                else "check the GitHub token"
            )
            raise SourceError(
                f"GitHub GET {target}: HTTP 401 {message} ({fix})",
                transient=False,
            )
        raise SourceError(f"GitHub GET {target}: HTTP {status} {message}".rstrip(), transient=False)

    def _backoff(self, attempt: int) -> float:
        return self._pacing.retry.delay_s(attempt, self._rng)


async def _read_capped(
    response: httpx.Response, cap: int | None, keep_head: int
) -> tuple[bytes, int, bool]:
    """(body, size, over_cap). Over the cap, body is only its first keep_head bytes, and
    when Content-Length already says too much nothing more than those is read."""
    declared = response.headers.get("content-length")
    identity = response.headers.get("content-encoding", "identity") == "identity"
    stated = int(declared) if declared and declared.isdigit() and identity else None
    known_over = cap is not None and stated is not None and stated > cap
    if known_over and not keep_head:
        return b"", stated or 0, True
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        chunks.append(chunk)
        if known_over and size >= keep_head:
            break
        if cap is not None and size > cap:
            return b"".join(chunks)[:keep_head], size, True
    if known_over:
        return b"".join(chunks)[:keep_head], stated or 0, True
    return b"".join(chunks), size, False


def _github_message(body: bytes) -> str:
    """GitHub's error message from a JSON error body, shortened; '' when there is none."""
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        return ""
    return message[:200] if isinstance(message, str) else ""


def _show(url: httpx.URL) -> str:
    """A URL as messages show it: path and query only, never userinfo or host secrets."""
    return url.raw_path.decode("ascii", "replace")
