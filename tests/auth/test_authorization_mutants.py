"""Who may call what, in-process with a real gRPC client: a stream whose rule names no job
owner passes through, a job-owner stream whose handler never checked the owner is cut with
INTERNAL before its first message leaves, the admin scope alone acts for no other user, and
a token naming an empty user is refused.

Written against mutants tools/mutation.py found surviving in meshkit/auth.py
(docs/testing.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from google.api import httpbody_pb2

from gateway.access import BUNDLE_SERVICE, PUBLIC_RULES
from meshkit.auth import Unauthenticated
from meshkit.bearer import aio_bearer_channel
from meshkit.rpc import create_server
from meshkit.signing import LocalSigner
from tests.support.auth import authenticator_for


class Streams(bundle_service_pb2_grpc.BundleServiceServicer):
    """Two streams that answer without reading anything, and never call authorize_job."""

    async def DownloadBundle(
        self, request: pb.DownloadBundleRequest, context: Any
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        yield httpbody_pb2.HttpBody(content_type="application/json", data=b"{}")

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: Any
    ) -> AsyncIterator[pb.WatchJobResponse]:
        yield pb.WatchJobResponse(final=True)


async def test_streams_pass_only_with_the_owner_check_their_rule_asks_for(
    signer: LocalSigner,
) -> None:
    server = create_server(
        "127.0.0.1:0",
        [(bundle_service_pb2_grpc.add_BundleServiceServicer_to_server, Streams(), BUNDLE_SERVICE)],
        auth=authenticator_for(signer),
        rules=PUBLIC_RULES,
    )
    await server.server.start()
    token = signer.mint(users=["alice"], ttl_s=3600)
    try:
        async with aio_bearer_channel(f"127.0.0.1:{server.port}", token) as channel:
            stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
            download = stub.DownloadBundle(pb.DownloadBundleRequest(user="alice"))
            assert [body.data async for body in download] == [b"{}"]

            watch = stub.WatchJob(pb.WatchJobRequest(id="01J00000000000000000000000"))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await watch.read()
            assert info.value.code() == grpc.StatusCode.INTERNAL
    finally:
        await server.server.stop(None)


async def test_the_admin_scope_alone_acts_only_for_the_users_the_token_names(
    signer: LocalSigner,
) -> None:
    # Acting for anyone takes the '*' user as well as the scope (ANY_USER).
    token = signer.mint(users=["alice"], admin=True, ttl_s=3600)
    principal = await authenticator_for(signer).principal([("authorization", f"Bearer {token}")])

    assert principal.admin and principal.may_act_for("Alice")
    assert not principal.may_act_for("bob")


async def test_a_token_whose_users_claim_names_an_empty_user_is_refused(
    signer: LocalSigner,
) -> None:
    token = signer.mint(users=["alice", ""], ttl_s=3600)

    with pytest.raises(Unauthenticated, match="'users' claim must be a list of GitHub user"):
        await authenticator_for(signer).principal([("authorization", f"Bearer {token}")])
