"""REST through real Envoy, in front of the stub gateway.

The tests in this package ask only for these fixtures, so they can be pointed at the real
gateway by providing the same names elsewhere:

- `grpc_target`: host:port of a gRPC server with BundleService, health and reflection,
  that trusts the session's `signer` (tests/conftest.py).
- `proxy`: a `tests.support.envoy.RestProxy` (Envoy transcoding to `grpc_target`).
- `rest`: an httpx.AsyncClient on the proxy.
- `user`: a user no other test touches, whose refresh ends DONE with a bundle.

Only tests that need to steer the server (cutting a stream midway) ask for `stub`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from meshkit.signing import LocalSigner
from tests.rest.stub_gateway import StubGateway, start_stub_gateway
from tests.support.auth import authenticator_for
from tests.support.rest_fixtures import proxy, rest  # noqa: F401 - shared fixtures


@pytest.fixture(scope="package")
async def stub(signer: LocalSigner) -> AsyncIterator[StubGateway]:
    gateway = await start_stub_gateway(authenticator_for(signer))
    yield gateway
    await gateway.stop()


@pytest.fixture(scope="package")
def grpc_target(stub: StubGateway) -> str:
    return stub.address


@pytest.fixture
def user() -> str:
    # A GitHub-shaped name of its own, so no two tests' jobs ever coalesce.
    return f"u-{uuid.uuid4().hex[:12]}"
