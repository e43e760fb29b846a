"""The gRPC surface as an operator sees it with grpcurl: reflection, health, calls and the
exit codes that carry gRPC statuses (64 + code)."""

from __future__ import annotations

import grpc

from tests.rest.flows import moves_forward
from tests.support.auth import grpcurl_token
from tests.support.envoy import RestProxy
from tests.support.grpcurl import grpcurl

BUNDLE = "contextmesh.gateway.v1.BundleService"
UNKNOWN_JOB = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


async def test_list_shows_the_services_health_and_reflection(grpc_target: str) -> None:
    # Reflection is open: no token needed to discover the API.
    services = (await grpcurl(grpc_target, "list")).check().stdout.split()

    assert {
        BUNDLE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(services)
    # Operations live on the admin listener only.
    assert "contextmesh.ops.v1.OpsService" not in services


async def test_describe_shows_the_contract(grpc_target: str) -> None:
    service = (await grpcurl(grpc_target, "describe", BUNDLE)).check().stdout
    message = (
        (await grpcurl(grpc_target, "describe", "contextmesh.gateway.v1.WatchJobResponse"))
        .check()
        .stdout
    )

    assert "rpc WatchJob ( .contextmesh.gateway.v1.WatchJobRequest )" in service
    assert "returns ( stream .contextmesh.gateway.v1.WatchJobResponse )" in service
    assert "bool final = 2;" in message


async def test_refresh_then_watch_to_the_final_message(
    grpc_target: str, user: str, admin_token: str
) -> None:
    auth = grpcurl_token(admin_token)
    refreshed = await grpcurl(
        grpc_target, f"{BUNDLE}/RefreshBundle", data={"user": user}, options=auth
    )
    job = refreshed.check().messages()[0]["job"]
    assert job["user"] == user and job["state"] == "JOB_STATE_QUEUED"

    watched = await grpcurl(grpc_target, f"{BUNDLE}/WatchJob", data={"id": job["id"]}, options=auth)

    messages = watched.check().messages()
    # How many states a watcher sees depends on how fast the job runs; what it can rely on
    # is that they only move forward and that exactly one final message ends the stream.
    assert moves_forward(messages), messages
    assert messages[-1]["final"] is True
    assert messages[-1]["job"]["state"] == "JOB_STATE_DONE"
    assert not any(m.get("final") for m in messages[:-1])


async def test_errors_exit_with_64_plus_the_grpc_code(grpc_target: str, admin_token: str) -> None:
    auth = grpcurl_token(admin_token)
    missing = await grpcurl(grpc_target, f"{BUNDLE}/GetJob", data={"id": UNKNOWN_JOB}, options=auth)
    malformed = await grpcurl(grpc_target, f"{BUNDLE}/GetJob", data={"id": "nope"}, options=auth)
    anonymous = await grpcurl(grpc_target, f"{BUNDLE}/GetJob", data={"id": UNKNOWN_JOB})

    assert (missing.returncode, missing.status) == (69, grpc.StatusCode.NOT_FOUND)
    assert (malformed.returncode, malformed.status) == (67, grpc.StatusCode.INVALID_ARGUMENT)
    assert "must be a job id" in malformed.stderr
    assert (anonymous.returncode, anonymous.status) == (80, grpc.StatusCode.UNAUTHENTICATED)


async def test_health_check(grpc_target: str) -> None:
    # Health is open: probes carry no token.
    overall = await grpcurl(grpc_target, "grpc.health.v1.Health/Check")
    service = await grpcurl(grpc_target, "grpc.health.v1.Health/Check", data={"service": BUNDLE})

    assert overall.check().messages() == [{"status": "SERVING"}]
    assert service.check().messages() == [{"status": "SERVING"}]


async def test_grpc_passes_through_envoy_unchanged(proxy: RestProxy) -> None:
    # The sidecar's readiness probe is a native gRPC health check on Envoy's port.
    result = await grpcurl(proxy.address, "grpc.health.v1.Health/Check")

    assert result.check().messages() == [{"status": "SERVING"}]
