"""The GitHub token as an httpx Auth that sends it to the API origin and nowhere else; for a
GitHub App installation, the installation's current token, minted when due.

The check runs on every request, redirect hops included (the source follows redirects itself
and sends each hop through this Auth), so a Location pointing at another host never sees the
token. The token is kept out of reprs; error messages of the source never include it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

import httpx

from syncsvc.sources.github_app import Installation

__all__ = ["ApiTokenAuth", "InstallationAuth", "origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port made explicit."""
    return (url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme))


class ApiTokenAuth(httpx.Auth):
    """Adds `Authorization: Bearer <token>` to requests for the API's scheme, host and port,
    and strips any Authorization header from requests for anywhere else."""

    def __init__(self, token: str | None, api_url: httpx.URL) -> None:
        self._token = token
        self._origin = origin(api_url)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if origin(request.url) == self._origin:
            if self._token:
                request.headers["Authorization"] = f"Bearer {self._token}"
        else:
            # A caller-supplied client might carry default headers: never forward them.
            request.headers.pop("Authorization", None)
        yield request

    def __repr__(self) -> str:
        scheme, host, port = self._origin
        return f"ApiTokenAuth(origin='{scheme}://{host}:{port}')"


class InstallationAuth(httpx.Auth):
    """Like ApiTokenAuth, with the installation's current token (minted on `client` when
    there is none fresh enough). A 401 on a token GitHub dropped before its expiry mints
    again at once and sends the request once more; a second 401 goes to the caller."""

    def __init__(
        self, installation: Installation, api_url: httpx.URL, client: httpx.AsyncClient
    ) -> None:
        self._installation = installation
        self._origin = origin(api_url)
        self._client = client

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("installation tokens are minted asynchronously")
        yield request  # pragma: no cover

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if origin(request.url) != self._origin:
            request.headers.pop("Authorization", None)
            yield request
            return
        token = await self._installation.token(self._client)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        self._installation.refused(token)
        again = await self._installation.token(self._client)
        if again != token:
            request.headers["Authorization"] = f"Bearer {again}"
            yield request

    def __repr__(self) -> str:
        scheme, host, port = self._origin
        return f"InstallationAuth(origin='{scheme}://{host}:{port}', {self._installation!r})"
