"""Errors over REST: gRPC statuses become HTTP codes with a google.rpc.Status JSON body, and
Envoy itself rejects what no RPC matches."""

from __future__ import annotations

from typing import Any

import httpx

from tests.rest.flows import refresh

UNKNOWN_JOB = "01ARZ3NDEKTSV4RRFFQ69G5FAV"  # well-formed, never issued


def _status(response: httpx.Response) -> dict[str, Any]:
    """The google.rpc.Status body of an error response."""
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) >= {"code", "message"}, body
    return body


async def test_not_found_is_404_with_a_status_body(rest: httpx.AsyncClient) -> None:
    response = await rest.get(f"/v1/jobs/{UNKNOWN_JOB}")

    assert response.status_code == 404
    status = _status(response)
    assert status["code"] == 5 and UNKNOWN_JOB in status["message"]


async def test_a_user_without_a_bundle_is_404(rest: httpx.AsyncClient, user: str) -> None:
    for path in (f"/v1/users/{user}/bundle", f"/v1/users/{user}/bundle:download"):
        response = await rest.get(path)
        assert response.status_code == 404, path
        assert _status(response)["code"] == 5


async def test_a_malformed_path_parameter_is_400_naming_the_field(
    rest: httpx.AsyncClient,
) -> None:
    response = await rest.get("/v1/jobs/not-a-job-id")

    assert response.status_code == 400
    status = _status(response)
    # The shared job_id rule (contracts' rules.proto) names what a good value looks like.
    assert status["code"] == 3
    assert status["message"] == (
        "id: must be a job id as RefreshBundle returned it: 26 characters of Crockford "
        "base32, upper case [job_id]"
    )


async def test_a_malformed_user_is_400_with_the_shared_rule_message(
    rest: httpx.AsyncClient,
) -> None:
    response = await rest.post("/v1/users/-octocat/bundle:refresh", json={})

    assert response.status_code == 400
    status = _status(response)
    assert status["code"] == 3
    assert status["message"].startswith("user: must be a GitHub user or organisation name")
    assert status["message"].endswith("[github_name]")


async def test_a_body_that_breaks_the_contract_is_400(rest: httpx.AsyncClient, user: str) -> None:
    response = await rest.post(f"/v1/users/{user}/bundle:search", json={"query": ""})

    assert response.status_code == 400
    assert _status(response)["code"] == 3


async def test_an_error_in_a_stream_before_its_first_message_is_an_http_error(
    rest: httpx.AsyncClient,
) -> None:
    response = await rest.get(f"/v1/jobs/{UNKNOWN_JOB}:watch")

    assert response.status_code == 404
    assert _status(response)["code"] == 5


async def test_an_unknown_path_is_404(rest: httpx.AsyncClient) -> None:
    response = await rest.get("/v1/nothing/here")

    assert response.status_code == 404


async def test_a_route_with_the_wrong_verb_is_404(rest: httpx.AsyncClient, user: str) -> None:
    response = await rest.get(f"/v1/users/{user}/bundle:refresh")

    assert response.status_code == 404


async def test_an_unknown_query_parameter_is_400(rest: httpx.AsyncClient, user: str) -> None:
    job_id = (await refresh(rest, user))["job"]["id"]

    response = await rest.get(f"/v1/jobs/{job_id}", params={"verbose": "1"})

    assert response.status_code == 400
    assert "verbose" in response.text


async def test_malformed_json_is_400(rest: httpx.AsyncClient, user: str) -> None:
    response = await rest.post(
        f"/v1/users/{user}/bundle:refresh",
        content=b'{"force": tru',
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 400
