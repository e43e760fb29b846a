"""Every RPC answers at the REST path its google.api.http rule declares, with JSON as proto3
maps it: camelCase names, enums by name, 64-bit integers as strings, defaults printed."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.rest.flows import finished_job, refresh, watch
from tests.rest.stub_gateway import StubGateway
from tests.support.envoy import HttpRule, http_rules

BUNDLE = "contextmesh.gateway.v1.BundleService"
WEBHOOK = "contextmesh.gateway.v1.WebhookService"
PING = b'{"zen": "Keep it logically awesome.",  "hook_id": 1}\n'
"""A ping as GitHub sends it, spacing and final newline included: the signature covers the
exact bytes, so the gateway must get them unchanged."""
WEBHOOK_SECRET = "rest-tests-webhook-secret"
"""The secret the real gateway of tests/rest_gateway is given; the stub checks none."""
PING_HEADERS = {
    "X-GitHub-Event": "ping",
    "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    "X-Hub-Signature-256": "sha256="
    + hmac.new(WEBHOOK_SECRET.encode(), PING, hashlib.sha256).hexdigest(),
    "Content-Type": "application/json",
}
Check = Callable[[httpx.Response, dict[str, str]], None]
HOOK = "https://hooks.example.com/contextmesh"


def _json(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def _refreshed(response: httpx.Response, values: dict[str, str]) -> None:
    body = _json(response)
    job = body["job"]
    assert job["user"] == values["user"] and len(job["id"]) == 26
    assert body["statusUrl"] == f"/bundles/{job['user']}/status?job_id={job['id']}"


def _got_job(response: httpx.Response, values: dict[str, str]) -> None:
    assert _json(response)["job"]["id"] == values["id"]


def _watched(response: httpx.Response, values: dict[str, str]) -> None:
    lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    assert lines[-1] == {"job": lines[-1]["job"], "final": True, "bundleReady": True}
    assert lines[-1]["job"]["id"] == values["id"]


def _got_bundle(response: httpx.Response, values: dict[str, str]) -> None:
    body = _json(response)
    assert body["user"] == values["user"] and body["jobId"] == values["id"]


def _downloaded(response: httpx.Response, values: dict[str, str]) -> None:
    assert _json(response)["user"] == values["user"]


def _cancelled(response: httpx.Response, values: dict[str, str]) -> None:
    # The job had already ended: CancelJob returns it unchanged.
    assert _json(response)["job"]["state"] == "JOB_STATE_DONE"


def _listed(response: httpx.Response, values: dict[str, str]) -> None:
    jobs = _json(response)["jobs"]
    assert values["id"] in [job["id"] for job in jobs]
    assert all(job["user"] == values["user"] for job in jobs)


def _status(response: httpx.Response, values: dict[str, str]) -> None:
    body = _json(response)
    assert body["job"]["id"] == values["id"]
    total = body["job"]["total"]
    assert body["progress"] == f"{total} of {total}"  # the job has finished


def _scheduled(response: httpx.Response, values: dict[str, str]) -> None:
    schedule = _json(response)["schedule"]
    assert schedule["user"] == values["user"] and schedule["interval"] == "21600s"
    assert schedule["nextRunTime"]


def _unscheduled(response: httpx.Response, values: dict[str, str]) -> None:
    assert _json(response) == {}


def _called_back(response: httpx.Response, values: dict[str, str]) -> None:
    callback = _json(response)["callback"]
    assert callback["user"] == values["user"] and callback["url"] == HOOK


def _set_callback(response: httpx.Response, values: dict[str, str]) -> None:
    _called_back(response, values)
    assert len(_json(response)["secret"]) == 64


def _ponged(response: httpx.Response, values: dict[str, str]) -> None:
    assert _json(response)["outcome"] == "WEBHOOK_OUTCOME_PONG"


async def test_a_delivery_reaches_the_gateway_byte_for_byte(rest: httpx.AsyncClient) -> None:
    # The stub answers a ping with what reached it: the signature covers the exact bytes, so
    # Envoy must pass the body and GitHub's headers on unchanged.
    response = await rest.post("/v1/webhooks/github", content=PING, headers=PING_HEADERS)
    assert response.status_code == 200, response.text
    assert json.loads(_json(response)["message"]) == {
        "event": "ping",
        "delivery": PING_HEADERS["X-GitHub-Delivery"],
        "signature": PING_HEADERS["X-Hub-Signature-256"],
        "bytes": len(PING),
        "sha256": hashlib.sha256(PING).hexdigest(),
        "contentType": "application/json",
    }


def _searched(response: httpx.Response, values: dict[str, str]) -> None:
    hits = _json(response)["hits"]
    assert len(hits) == 2 and hits[0]["repository"].startswith(f"{values['user']}/")


# Per RPC: the JSON body it is sent (routes with body "*") and what its answer must show.
CASES: dict[str, tuple[dict[str, Any] | bytes | None, Check]] = {
    f"{BUNDLE}/RefreshBundle": ({"force": True}, _refreshed),
    f"{BUNDLE}/GetJob": (None, _got_job),
    f"{BUNDLE}/WatchJob": (None, _watched),
    f"{BUNDLE}/GetBundle": (None, _got_bundle),
    f"{BUNDLE}/DownloadBundle": (None, _downloaded),
    f"{BUNDLE}/CancelJob": ({}, _cancelled),
    f"{BUNDLE}/SearchBundle": ({"query": "search in python", "topK": 2}, _searched),
    f"{BUNDLE}/ListJobs": (None, _listed),
    f"{BUNDLE}/GetRefreshStatus": (None, _status),
    f"{BUNDLE}/SetSchedule": ({"interval": "21600s"}, _scheduled),
    f"{BUNDLE}/GetSchedule": (None, _scheduled),
    f"{BUNDLE}/DeleteSchedule": (None, _unscheduled),
    f"{BUNDLE}/SetCallback": ({"url": HOOK}, _set_callback),
    f"{BUNDLE}/GetCallback": (None, _called_back),
    f"{BUNDLE}/DeleteCallback": (None, _unscheduled),
    # The raw body and the headers of a GitHub delivery reach the gateway unchanged.
    f"{WEBHOOK}/ReceiveGithubWebhook": (PING, _ponged),
}
# Fields a route carries in its query string rather than its path.
QUERIES: dict[str, Callable[[dict[str, str]], dict[str, str]]] = {
    f"{BUNDLE}/GetRefreshStatus": lambda values: {"job_id": values["id"]},
}


# What a route needs to exist first (a schedule to read).
async def _schedule(rest: httpx.AsyncClient, user: str) -> None:
    answer = await rest.put(f"/v1/users/{user}/schedule", json={"interval": "21600s"})
    assert answer.status_code == 200, answer.text


async def _callback(rest: httpx.AsyncClient, user: str) -> None:
    answer = await rest.put(f"/v1/users/{user}/callback", json={"url": HOOK})
    assert answer.status_code == 200, answer.text


BEFORE: dict[str, Callable[[httpx.AsyncClient, str], Awaitable[None]]] = {
    f"{BUNDLE}/GetSchedule": _schedule,
    f"{BUNDLE}/GetCallback": _callback,
}
RULES = http_rules()


def test_every_rpc_with_a_rest_route_has_a_case() -> None:
    assert {rule.rpc for rule in RULES} == set(CASES)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: f"{rule.method} {rule.path}")
async def test_every_rpc_answers_at_its_path(
    rest: httpx.AsyncClient, user: str, rule: HttpRule
) -> None:
    job = await finished_job(rest, user)
    values = {"user": user, "id": job["id"]}
    path = re.sub(r"\{(\w+)(=[^}]*)?\}", lambda m: values[m.group(1)], rule.path)
    body, check = CASES[rule.rpc]
    # Every RPC with a body on one route has a case's body; a route without one is sent none.
    assert (body is not None) == any(r.body for r in RULES if r.rpc == rule.rpc), rule
    query = QUERIES.get(rule.rpc, lambda _: {})(values)
    if rule.rpc in BEFORE:
        await BEFORE[rule.rpc](rest, user)

    raw = isinstance(body, bytes)
    response = await rest.request(
        rule.verb,
        path,
        json=body if rule.body == "*" else None,
        content=body if raw else None,
        headers=PING_HEADERS if raw else None,
        params=query,
    )

    assert response.status_code == 200, response.text
    check(response, values)


async def test_path_and_body_fields_both_reach_the_request(
    rest: httpx.AsyncClient, user: str
) -> None:
    forced = (await refresh(rest, user, force=True))["job"]
    assert (forced["user"], forced["force"]) == (user, True)

    got = (await rest.get(f"/v1/jobs/{forced['id']}")).json()["job"]
    assert (got["user"], got["force"]) == (user, True)


async def test_the_durable_functions_paths_refresh_and_report_k_of_n(
    rest: httpx.AsyncClient, user: str
) -> None:
    # A client of the seed's design: POST with no body, then poll the status_url it got.
    started = await rest.post(f"/bundles/{user}/refresh")
    assert started.status_code == 200, started.text
    status_url = started.json()["statusUrl"]
    job_id = started.json()["job"]["id"]
    assert status_url == f"/bundles/{user}/status?job_id={job_id}"
    await watch(rest, job_id)  # until the job has ended

    status = await rest.get(status_url)

    assert status.status_code == 200, status.text
    body = status.json()
    assert body["job"]["state"] == "JOB_STATE_DONE"
    total = body["job"]["total"]
    assert total > 0 and body["progress"] == f"{total} of {total}"
    # Someone else's path answers as for an unknown job.
    other = await rest.get(f"/bundles/{user}x/status", params={"job_id": job_id})
    assert other.status_code == 404, other.text


async def test_a_schedule_is_set_read_and_deleted(rest: httpx.AsyncClient, user: str) -> None:
    path = f"/v1/users/{user}/schedule"
    assert (await rest.get(path)).status_code == 404
    too_often = await rest.put(path, json={"interval": "30s"})
    assert too_often.status_code == 400 and "interval" in too_often.text

    set_ = await rest.put(path, json={"interval": "3600s"})
    assert set_.status_code == 200, set_.text
    got = await rest.get(path)
    assert got.json()["schedule"]["interval"] == "3600s"
    assert (await rest.delete(path)).status_code == 200
    assert (await rest.get(path)).status_code == 404


async def test_the_admin_plane_has_no_public_route(rest: httpx.AsyncClient) -> None:
    # OpsService has REST rules in its contract, but the public proxy does not transcode it.
    for verb, path in (("GET", "/v1/deadletters"), ("POST", "/v1/deadletters/1:redrive")):
        response = await rest.request(verb, path, json={} if verb == "POST" else None)
        assert response.status_code == 404, (path, response.text)


async def test_json_is_camel_case_with_enum_names_and_defaults(
    rest: httpx.AsyncClient, user: str
) -> None:
    body = await refresh(rest, user)

    # always_print_primitive_fields: false and zero values are there, not left out.
    assert body["coalesced"] is False
    assert {"createTime", "updateTime", "total", "synced", "failures"} <= set(body["job"])
    assert body["job"]["state"] == "JOB_STATE_QUEUED"
    assert not any("_" in key for key in body["job"])


async def test_int64_fields_are_strings(rest: httpx.AsyncClient, user: str) -> None:
    job = await finished_job(rest, user)
    bundle = (await rest.get(f"/v1/users/{user}/bundle")).json()

    size = bundle["bundle"]["sizeBytes"]
    assert isinstance(size, str) and size.isdigit()
    assert job["bundle"]["sizeBytes"] == size


async def test_download_returns_the_raw_bundle_with_its_content_type(
    rest: httpx.AsyncClient, user: str
) -> None:
    await finished_job(rest, user)
    summary = (await rest.get(f"/v1/users/{user}/bundle")).json()

    response = await rest.get(summary["downloadPath"])

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    # The bytes are the stored bundle itself, not HttpBody messages or base64.
    assert len(response.content) == int(summary["bundle"]["sizeBytes"])
    assert hashlib.sha256(response.content).hexdigest() == summary["bundle"]["contentHash"]
    assert response.json()["user"] == user


async def test_a_cancelled_job_says_why_as_a_status_with_its_reason(
    stub: StubGateway, rest: httpx.AsyncClient, user: str
) -> None:
    stub.state.hold(user)  # the job stays QUEUED, so the cancel is what ends it
    job_id = (await refresh(rest, user))["job"]["id"]

    job = _json(await rest.post(f"/v1/jobs/{job_id}:cancel", json={}))["job"]

    assert job["state"] == "JOB_STATE_CANCELLED"
    # Envoy renders the google.rpc.ErrorInfo packed in details as JSON with its type.
    assert job["errorStatus"] == {
        "code": 1,
        "message": "cancelled by a caller",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "CANCELLED",
                "domain": "contextmesh.job.v1",
                "metadata": {},
            }
        ],
    }
    # The deprecated v1 fields, for clients that do not read errorStatus yet.
    assert (job["error"], job["errorCode"]) == ("cancelled by a caller", "ERROR_CODE_CANCELLED")
