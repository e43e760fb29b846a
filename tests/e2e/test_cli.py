"""The `contextmesh` CLI (`python -m meshctl`) against a running mesh: `job`, `bundle`,
`search` and `deadletters` print what the API holds and exit with the documented codes
(0 success, 1 a failed call or job, 2 a bad argument)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.job.v1 import job_pb2
from contextmesh.search.v1 import search_service_pb2

from meshctl.progress import summary
from tests.support.mesh import ROOT, Mesh
from tests.train.support import tiny_model_dir

__all__ = ["tiny_model_dir"]  # a fixture of tests/train, used here

JobState = job_pb2.JobState
SEARCH_SERVICE = search_service_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
Cli = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture
def cli(mesh: Mesh) -> Cli:
    """cli(*args) runs `python -m meshctl *args` as the admin; stdout and stderr as bytes."""

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "meshctl", *args],
            cwd=ROOT,
            env={
                **mesh.env,
                "CONTEXTMESH_TARGET": mesh.gateway_target,
                "CONTEXTMESH_ADMIN_TARGET": mesh.admin_target,
                "CONTEXTMESH_TOKEN": mesh.admin_token,
            },
            capture_output=True,
            timeout=120,
        )

    return run


def lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines()


def test_job_bundle_and_deadletters_from_a_parked_task_to_its_redriven_bundle(
    mesh: Mesh, stub, cli: Cli, tmp_path: Path
) -> None:
    mesh.env["CONTEXTMESH_SYNC_RETRY_BACKOFF_S"] = "0.2,0.2"
    # Storing project-03's result fails on every delivery: a file is where its folder goes.
    blocked = tmp_path / "data" / "blobs" / "repos" / "alice" / "project-03"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("in the way")
    for service in ("gateway", "syncsvc", "mergesvc"):
        mesh.start(service)

    started = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice")).job
    watched = lines(cli("job", started.id, "--watch"))
    first = stub.GetJob(pb.GetJobRequest(id=started.id)).job
    assert first.state == JobState.JOB_STATE_DONE and (first.synced, first.failed) == (11, 1)
    assert "\n".join(watched).endswith(summary(first))
    assert lines(cli("job", first.id)) == summary(first).splitlines()

    shown = lines(cli("bundle", "alice"))
    assert shown[0] == (
        f"bundle {first.bundle.content_hash} (12 repositories, {first.bundle.size_bytes} "
        f"bytes) from job {first.id}"
    )
    rows = {line.split()[1]: line.split()[0] for line in shown[1:]}
    assert rows == {f"alice/project-{i:02d}": "synced" for i in range(12) if i != 3} | {
        "alice/project-03": "failed"
    }
    downloaded = cli("bundle", "alice", "--download", "-")
    assert downloaded.returncode == 0, downloaded.stderr.decode()
    assert hashlib.sha256(downloaded.stdout).hexdigest() == first.bundle.content_hash

    letters = [json.loads(line) for line in lines(cli("deadletters"))]
    parked = [letter for letter in letters if letter["jobId"] == first.id]
    assert len(parked) == 1 and "NotADirectoryError" in parked[0]["reason"]

    blocked.unlink()  # the fault is fixed
    sequence = str(parked[0]["sequence"])
    said = lines(cli("deadletters", "--redrive", sequence))
    match = re.fullmatch(
        rf"dead letter {sequence} \(job {first.id}\) redriven as job (\S+)", said[0]
    )
    assert match, said
    redriven = match.group(1)
    watched = lines(cli("job", redriven, "--watch"))
    done = stub.GetJob(pb.GetJobRequest(id=redriven)).job
    assert "\n".join(watched).endswith(summary(done))
    assert done.state == JobState.JOB_STATE_DONE and (done.synced, done.failed) == (1, 0)
    assert all(letter["jobId"] != first.id for letter in map(json.loads, lines(cli("deadletters"))))
    assert lines(cli("bundle", "alice"))[0].endswith(f"from job {redriven}")

    unknown = cli("job", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert unknown.returncode == 1 and b"contextmesh: NOT_FOUND:" in unknown.stderr


def test_search_prints_the_ranked_repositories_of_the_latest_bundle(
    mesh: Mesh, stub, cli: Cli, tiny_model_dir: Path
) -> None:
    mesh.env["CONTEXTMESH_BASE_MODEL"] = str(tiny_model_dir)
    for service in ("gateway", "syncsvc", "mergesvc", "searchsvc"):
        mesh.start(service)
    started = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice")).job
    lines(cli("job", started.id, "--watch"))
    job = stub.GetJob(pb.GetJobRequest(id=started.id)).job
    mesh.wait_serving(f"127.0.0.1:{mesh.search_port}", "searchsvc", 60.0, service=SEARCH_SERVICE)

    shown = lines(cli("search", "alice", "Project number 7 lib7", "-k", "3"))
    assert shown[0] == f"3 results (base model, bundle {job.bundle.content_hash[:12]})"
    ranked = [
        re.fullmatch(r"(\d)\. (alice/project-\d\d)  -?\d\.\d{3}", line) for line in shown[1::2]
    ]
    assert [m.group(1) for m in ranked if m] == ["1", "2", "3"], shown
    assert all(line.startswith("   [") for line in shown[2::2]), shown

    empty = cli("search", "alice", "")
    assert empty.returncode == 2 and b"contextmesh: INVALID_ARGUMENT:" in empty.stderr
