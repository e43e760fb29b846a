"""SetCallback / GetCallback / DeleteCallback through the gateway's own servicer and
interceptors: the secret is shown once and rotates, refused URLs say why, and nobody sets
another user's callback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.search.v1 import search_service_pb2_grpc

from gateway.access import BUNDLE_SERVICE, PUBLIC_RULES
from gateway.bundle_service import BundleService
from gateway.bundles import BundleReader
from meshkit.bearer import bearer_metadata
from meshkit.blob import open_blob_store
from meshkit.rpc import create_server
from meshkit.signing import LocalSigner
from meshkit.topology import Buckets
from tests.gateway.conftest import Gateway
from tests.support.auth import authenticator_for


@dataclass
class Caller:
    stub: bundle_service_pb2_grpc.BundleServiceStub
    metadata: tuple[tuple[str, str], ...]


@pytest.fixture
async def caller(
    gateway: Gateway, signer: LocalSigner, user: str, tmp_path: Path
) -> AsyncIterator[Caller]:
    """The gateway's BundleService, and a caller that acts for `user` only."""
    nowhere = grpc.aio.insecure_channel("127.0.0.1:9")  # search is never called here
    service = BundleService(
        gateway.refresher,
        gateway.jobs,
        BundleReader(
            await gateway.js.key_value(Buckets.BUNDLES.name), open_blob_store(tmp_path.as_uri())
        ),
        search_service_pb2_grpc.SearchServiceStub(nowhere),
        gateway.schedules,
        gateway.callbacks,
    )
    server = create_server(
        "127.0.0.1:0",
        [(bundle_service_pb2_grpc.add_BundleServiceServicer_to_server, service, BUNDLE_SERVICE)],
        auth=authenticator_for(signer),
        rules=PUBLIC_RULES,
    )
    await server.server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Caller(
            bundle_service_pb2_grpc.BundleServiceStub(channel),
            bearer_metadata(signer.mint(users=[user])),
        )
    finally:
        await channel.close()
        await server.server.stop(grace=None)
        await nowhere.close()


async def test_set_shows_the_secret_once_and_setting_again_rotates_it(
    caller: Caller, gateway: Gateway, user: str
) -> None:
    url = "https://hooks.example.com/cm"
    first = await caller.stub.SetCallback(
        pb.SetCallbackRequest(user=user, url=url), metadata=caller.metadata
    )
    got = await caller.stub.GetCallback(pb.GetCallbackRequest(user=user), metadata=caller.metadata)
    second = await caller.stub.SetCallback(
        pb.SetCallbackRequest(user=user, url=url), metadata=caller.metadata
    )

    assert (first.callback.user, first.callback.url) == (user, url)
    assert len(first.secret) == 64 and second.secret != first.secret
    assert got.callback == first.callback  # no secret in GetCallbackResponse at all
    assert not pb.GetCallbackResponse.DESCRIPTOR.fields_by_name.get("secret")
    stored = await gateway.callbacks.get(user)
    assert stored is not None and stored.secret == second.secret  # what notifysvc signs with
    assert second.callback.create_time == first.callback.create_time


async def test_delete_stops_it_and_is_not_an_error_twice(caller: Caller, user: str) -> None:
    await caller.stub.SetCallback(
        pb.SetCallbackRequest(user=user, url="http://127.0.0.1:8080/cm"), metadata=caller.metadata
    )
    for _ in range(2):
        await caller.stub.DeleteCallback(
            pb.DeleteCallbackRequest(user=user), metadata=caller.metadata
        )

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await caller.stub.GetCallback(pb.GetCallbackRequest(user=user), metadata=caller.metadata)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "set one with SetCallback" in (missing.value.details() or "")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/cm", "must use https"),
        ("https://10.1.2.3/cm", "10.1.2.3 is a private or reserved address"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("not a url", "url"),
    ],
)
async def test_a_refused_url_is_invalid_argument_saying_why(
    caller: Caller, gateway: Gateway, user: str, url: str, why: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await caller.stub.SetCallback(
            pb.SetCallbackRequest(user=user, url=url), metadata=caller.metadata
        )

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert why in (refused.value.details() or "")
    assert await gateway.callbacks.get(user) is None


async def test_another_users_callback_is_out_of_reach(caller: Caller, user: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await caller.stub.SetCallback(
            pb.SetCallbackRequest(user=f"{user}x", url="https://hooks.example.com/cm"),
            metadata=caller.metadata,
        )

    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
