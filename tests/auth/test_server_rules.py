"""meshkit.rpc.create_server on its own: the concurrency cap, and methods without a rule.

In-process servers on loopback, real gRPC clients.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc, webhook_service_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.access import BUNDLE_SERVICE, PUBLIC_RULES, WEBHOOK_SERVICE
from meshkit.bearer import aio_bearer_channel
from meshkit.rpc import create_server
from meshkit.signing import LocalSigner
from tests.support.auth import authenticator_for


async def test_calls_beyond_the_cap_are_refused() -> None:
    server = create_server("127.0.0.1:0", [], auth=None, max_concurrent_rpcs=2)
    await server.server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            # Two open watches (long-lived streams, like WatchJob) fill the cap...
            watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(2)]
            for watch in watches:
                await watch.read()
            # ...so a third call is refused at once instead of queueing.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            for watch in watches:
                watch.cancel()
            # Room again once they end.
            async with asyncio.timeout(10):
                while True:
                    try:
                        await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                        break
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                        await asyncio.sleep(0.05)
    finally:
        await server.server.stop(None)


async def test_a_method_without_a_rule_is_refused_even_for_an_admin(
    signer: LocalSigner, admin_token: str
) -> None:
    servicer = bundle_service_pb2_grpc.BundleServiceServicer()
    add = bundle_service_pb2_grpc.add_BundleServiceServicer_to_server
    rules = {k: v for k, v in PUBLIC_RULES.items() if not k.endswith("/GetBundle")}
    server = create_server(
        "127.0.0.1:0",
        [(add, servicer, BUNDLE_SERVICE)],
        auth=authenticator_for(signer),
        rules=rules,
    )
    await server.server.start()
    try:
        async with aio_bearer_channel(f"127.0.0.1:{server.port}", admin_token) as channel:
            stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetBundle(pb.GetBundleRequest(user="alice"))
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await server.server.stop(None)


def test_every_public_method_has_a_rule() -> None:
    public = [
        pb.DESCRIPTOR.services_by_name["BundleService"],
        webhook_service_pb2.DESCRIPTOR.services_by_name["WebhookService"],
    ]
    methods = {f"/{service.full_name}/{m.name}" for service in public for m in service.methods}
    assert methods == set(PUBLIC_RULES)
    # Only the webhook authenticates its caller itself (GitHub's signature over the body).
    assert [m for m, rule in PUBLIC_RULES.items() if rule.self_authenticated] == [
        f"/{WEBHOOK_SERVICE}/ReceiveGithubWebhook"
    ]
