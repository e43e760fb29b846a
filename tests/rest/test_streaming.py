"""Server streams over REST: WatchJob as NDJSON ending in a final line, and what a client
sees when a stream is cut (no final line; with trailers, a non-zero grpc-status)."""

from __future__ import annotations

import json

import httpx

from tests.rest.flows import finished_job, moves_forward, refresh, watch
from tests.rest.stub_gateway import StubGateway
from tests.support.envoy import RestProxy, get_with_trailers


async def test_watch_streams_ndjson_that_ends_with_a_final_line(
    rest: httpx.AsyncClient, user: str
) -> None:
    job_id = (await refresh(rest, user))["job"]["id"]

    messages = await watch(rest, job_id)

    # How many states arrive depends on how fast the job runs (the stub streams several);
    # every stream, fast or slow, moves forward and ends with exactly one final line.
    assert messages
    assert [m["final"] for m in messages] == [False] * (len(messages) - 1) + [True]
    assert moves_forward(messages), messages
    # Once the bundle is ready, every later line says so.
    ready = [m["bundleReady"] for m in messages]
    assert ready == sorted(ready) and ready[-1] is True
    assert messages[-1]["job"]["state"] == "JOB_STATE_DONE"
    assert {m["job"]["id"] for m in messages} == {job_id}


async def test_watch_of_an_ended_job_replays_its_state_as_the_final_line(
    rest: httpx.AsyncClient, user: str
) -> None:
    job = await finished_job(rest, user)

    messages = await watch(rest, job["id"])

    assert messages == [{"job": job, "final": True, "bundleReady": True}]


async def test_one_message_per_line_with_trailers_ok(
    proxy: RestProxy, rest: httpx.AsyncClient, user: str
) -> None:
    job_id = (await refresh(rest, user))["job"]["id"]

    response = await get_with_trailers(
        f"{proxy.base_url}/v1/jobs/{job_id}:watch",
        headers={"Authorization": rest.headers["authorization"]},
    )

    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.lines[-1])["final"] is True
    assert response.trailers["grpc-status"] == "0"


async def test_a_cut_stream_has_no_final_line_and_a_failing_grpc_status(
    stub: StubGateway, proxy: RestProxy, rest: httpx.AsyncClient, user: str
) -> None:
    stub.state.cut_watches(user, after=2)
    job_id = (await refresh(rest, user))["job"]["id"]

    # A client that ignores trailers (httpx) sees a 200 that ends cleanly: only the
    # missing final line tells it the stream was cut and it should watch again.
    messages = await watch(rest, job_id)
    assert len(messages) == 2
    assert not any(m["final"] for m in messages)

    # With trailers, the gRPC status of the cut arrives after the last chunk.
    response = await get_with_trailers(
        f"{proxy.base_url}/v1/jobs/{job_id}:watch",
        headers={"Authorization": rest.headers["authorization"]},
    )
    assert response.status == 200
    assert len(response.lines) == 2  # the two lines before the cut, then the trailers
    assert not any(json.loads(line)["final"] for line in response.lines)
    assert response.trailers["grpc-status"] == "14"  # UNAVAILABLE
    assert response.trailers["grpc-message"] == "stub: watch stream cut"
