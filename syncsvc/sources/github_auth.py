"""The GitHub token as an httpx Auth that sends it to the API origin and nowhere else.

The check runs on every request, redirect hops included (the source follows redirects itself
and sends each hop through this Auth), so a Location pointing at another host never sees the
token. The token is kept out of reprs; error messages of the source never include it.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx

__all__ = ["ApiTokenAuth", "origin"]

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
