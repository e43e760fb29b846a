"""REST calls the tests share: refresh a user, follow a job to its end.

They use only the public REST surface, so they hold for any gateway behind Envoy.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from contextmesh.job.v1 import job_pb2

__all__ = ["finished_job", "moves_forward", "refresh", "watch"]


async def refresh(rest: httpx.AsyncClient, user: str, *, force: bool = False) -> dict[str, Any]:
    """POST :refresh and return the RefreshBundleResponse as JSON."""
    response = await rest.post(f"/v1/users/{user}/bundle:refresh", json={"force": force})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def watch(rest: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    """GET :watch and return every NDJSON message, read line by line as they arrive."""
    messages = []
    async with rest.stream("GET", f"/v1/jobs/{job_id}:watch", timeout=30.0) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.strip():
                messages.append(json.loads(line))
    return messages


async def finished_job(rest: httpx.AsyncClient, user: str) -> dict[str, Any]:
    """Refresh `user`, watch the job to its final message and return that job (DONE)."""
    job_id = (await refresh(rest, user))["job"]["id"]
    messages = await watch(rest, job_id)
    assert messages and messages[-1]["final"] is True, messages
    job: dict[str, Any] = messages[-1]["job"]
    assert job["state"] == "JOB_STATE_DONE", job
    return job


def moves_forward(messages: list[dict[str, Any]]) -> bool:
    """Whether the jobs' states in JSON messages never go back. QUEUED to DONE are numbered
    in the order a job passes through them."""
    ranks = [job_pb2.JobState.Value(m["job"]["state"]) for m in messages]
    return ranks == sorted(ranks)
