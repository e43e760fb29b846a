"""One POST to a user's callback URL, to a public address only.

Before each POST the host is resolved and every address it resolves to is checked
(meshkit.domain.callbacks: private, link-local and reserved addresses are refused, loopback
ones unless the URL itself named a loopback host), and the request goes to the address that
was checked, not to a second lookup's answer: the Host header and TLS name stay the URL's.
Redirects are not followed: a 3xx is a failed delivery like a 5xx, so no receiver can bounce
a notification into the mesh's own network. The response body is never read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping

import httpx

from meshkit.domain.callbacks import (
    CallbackTarget,
    CallbackUrlError,
    IPAddress,
    address_problem,
    parse_callback_url,
)

__all__ = [
    "CALLBACK_TIMEOUT_S",
    "CallbackFailed",
    "CallbackRefused",
    "CallbackSender",
    "Resolver",
    "resolve",
]

CALLBACK_TIMEOUT_S = 10.0
"""Connect, write and read, each; within the NOTIFY stream's deadline of 30 s."""

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
"""host, port -> the addresses a connection may go to."""


class CallbackFailed(Exception):
    """The receiver did not take the notification (non-2xx, timeout, refused): retry later."""


class CallbackRefused(Exception):
    """contextmesh will not call this URL (its rules, or where its host resolves to now)."""


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The host's addresses, as the system resolver answers now."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


class CallbackSender:
    """POSTs notifications with one pooled HTTP client."""

    def __init__(
        self,
        *,
        resolver: Resolver = resolve,
        timeout_s: float = CALLBACK_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.resolver = resolver
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            transport=transport,
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST body to url; returns the 2xx status. CallbackRefused when the URL or the
        address its host resolves to is not allowed, CallbackFailed when the receiver did not
        take it."""
        try:
            target = parse_callback_url(url)  # the rules may have tightened since it was set
        except CallbackUrlError as exc:
            raise CallbackRefused(str(exc)) from None
        address = await self._checked_address(target)
        pinned = httpx.URL(url).copy_with(host=str(address))
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        host_header = httpx.URL(url).netloc.decode("ascii")
        try:
            async with self.client.stream(
                "POST",
                pinned,
                content=body,
                headers={**headers, "Host": host_header},
                extensions=extensions,
            ) as response:
                status = response.status_code
        except httpx.HTTPError as exc:
            raise CallbackFailed(
                f"POST to the callback failed: {type(exc).__name__}: {exc}"
            ) from None
        if 300 <= status < 400:
            raise CallbackFailed(
                f"the callback answered {status}, a redirect: contextmesh does not follow them"
            )
        if not 200 <= status < 300:
            raise CallbackFailed(f"the callback answered {status}")
        return status

    async def _checked_address(self, target: CallbackTarget) -> IPAddress:
        try:
            addresses = await self.resolver(target.host, target.port)
        except OSError as exc:
            raise CallbackFailed(f"cannot resolve {target.host}: {exc}") from None
        if not addresses:
            raise CallbackFailed(f"{target.host} resolves to no address")
        for address in addresses:
            problem = address_problem(address, loopback_allowed=target.loopback)
            if problem is not None:
                raise CallbackRefused(
                    f"{target.host} resolves to {problem}; contextmesh calls public addresses only"
                )
        return addresses[0]
