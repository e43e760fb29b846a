"""The REST side of the tests in tests/rest and tests/rest_gateway, shared by both.

Each conftest provides `grpc_target` (a stub or the real gateway) and imports these, so
each directory gets its own: `proxy` is real Envoy transcoding REST to that target, `rest`
an HTTP client on it that sends the session's admin token (tests/conftest.py) in the
Authorization header.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.auth import bearer_header
from tests.support.envoy import RestProxy, rest_proxy

__all__ = ["proxy", "rest"]


@pytest.fixture(scope="package")
def proxy(grpc_target: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestProxy]:
    with rest_proxy(grpc_target, tmp_path_factory.mktemp("envoy")) as running:
        yield running


@pytest.fixture(scope="package")
async def rest(proxy: RestProxy, admin_token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=proxy.base_url, timeout=30.0, headers=bearer_header(admin_token)
    ) as client:
        yield client
