"""The same edge over REST, through real Envoy in front of the real gateway: the Authorization
header reaches the gateway as metadata, refusals are 401/403 with a readable body, ops have
no public route, and oversized or undecodable bodies are refused."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.auth import bearer_header
from tests.support.envoy import RestProxy
from tests.support.mesh import Mesh

UNKNOWN_JOB = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def _client(proxy: RestProxy, token: str | None = None) -> httpx.Client:
    headers = bearer_header(token) if token else {}
    return httpx.Client(base_url=proxy.base_url, headers=headers, timeout=30.0)


def _message(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    return str(body.get("message", ""))


def test_anonymous_is_401_saying_how_to_authenticate(edge_proxy: RestProxy) -> None:
    with _client(edge_proxy) as anonymous:
        responses = [
            anonymous.post("/v1/users/alice/bundle:refresh", json={}),
            anonymous.get("/v1/users/alice/bundle"),
            anonymous.get(f"/v1/jobs/{UNKNOWN_JOB}"),
        ]
    for response in responses:
        assert response.status_code == 401, response.text
        assert "Authorization header" in _message(response)


def test_user_and_wrong_user_and_admin(edge_mesh: Mesh, edge_proxy: RestProxy) -> None:
    with (
        _client(edge_proxy, edge_mesh.token("alice")) as alice,
        _client(edge_proxy, edge_mesh.token("bob")) as bob,
        _client(edge_proxy, edge_mesh.admin_token) as admin,
    ):
        refreshed = alice.post("/v1/users/alice/bundle:refresh", json={})
        assert refreshed.status_code == 200, refreshed.text
        job_id = refreshed.json()["job"]["id"]

        denied = bob.post("/v1/users/alice/bundle:refresh", json={})
        assert denied.status_code == 403 and "'alice'" in _message(denied)
        assert bob.post("/v1/users/alice/bundle:search", json={"query": "x"}).status_code == 403

        theirs, unknown = bob.get(f"/v1/jobs/{job_id}"), bob.get(f"/v1/jobs/{UNKNOWN_JOB}")
        assert theirs.status_code == unknown.status_code == 404
        assert _message(theirs) == _message(unknown).replace(UNKNOWN_JOB, job_id)
        assert bob.post(f"/v1/jobs/{job_id}:cancel", json={}).status_code == 404

        assert admin.get(f"/v1/jobs/{job_id}").json()["job"]["user"] == "alice"


def test_ops_have_no_public_route(edge_mesh: Mesh, edge_proxy: RestProxy) -> None:
    with _client(edge_proxy, edge_mesh.admin_token) as admin:
        assert admin.get("/v1/deadletters").status_code == 404
        assert admin.post("/v1/deadletters/1:redrive", json={}).status_code == 404


def test_a_100mb_body_is_refused_by_envoy(edge_mesh: Mesh, edge_proxy: RestProxy) -> None:
    body = b'{"force": true, "pad": "' + b"x" * (100 * 1024 * 1024) + b'"}'
    with _client(edge_proxy, edge_mesh.token("alice")) as alice:
        response = alice.post(
            "/v1/users/alice/bundle:refresh",
            content=body,
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413, response.text[:500]


def test_an_undecodable_body_is_400_without_a_class_name(
    edge_mesh: Mesh, edge_proxy: RestProxy
) -> None:
    with _client(edge_proxy, edge_mesh.token("alice")) as alice:
        response = alice.post(
            "/v1/users/alice/bundle:refresh",
            content=b"\xff\xfe not json",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    assert "Error" not in response.text and "Exception" not in response.text


def test_a_refresh_flood_is_429_with_retry_after(edge_mesh: Mesh, edge_proxy: RestProxy) -> None:
    """The gateway's per-caller limit (defaults: 5 a second, bursts of 50) through Envoy: 429
    with a readable body and a Retry-After header; another caller is unaffected."""
    flooder = edge_mesh.signer.mint(users=["alice"], subject="rest-flooder", ttl_s=600)
    with _client(edge_proxy, flooder) as flood, _client(edge_proxy, edge_mesh.token("bob")) as bob:
        for _ in range(200):  # the burst, plus what refills while the loop runs
            response = flood.post("/v1/users/alice/bundle:refresh", json={})
            if response.status_code != 200:
                break
        assert response.status_code == 429, response.text
        assert "too many refreshes from this caller" in _message(response)
        assert int(response.headers["retry-after"]) >= 1
        assert bob.post("/v1/users/bob/bundle:refresh", json={}).status_code == 200
