"""One refresh is one trace across the real processes, exported over OTLP/HTTP (issue 13).

A test receiver stands in for the collector; the services get only the standard OTEL_*
variables, as an operator would set them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2

from meshctl.nats_server import NatsServer
from meshkit.topology import MERGE, SYNC, TRAIN
from tests.e2e.conftest import write_repo
from tests.support.fake_github import FakeGithub, populate
from tests.support.mesh import Mesh
from tests.support.otlp import Kind, OtlpReceiver, ReceivedSpan
from tests.train.support import tiny_model_dir

__all__ = ["tiny_model_dir"]  # a fixture of tests/train, used here

JobState = job_pb2.JobState
TOKEN = "ghp_" + "T" * 36
REFRESH_METHOD = "/contextmesh.gateway.v1.BundleService/RefreshBundle"
SEARCH_METHOD = "/contextmesh.search.v1.SearchService/Search"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


def refresh_trace(spans: list[ReceivedSpan], job_id: str) -> list[ReceivedSpan]:
    """The spans of the trace whose publishes carry job_id."""
    traces = {s.trace_id for s in spans if s.attributes.get("contextmesh.job_id") == job_id}
    assert len(traces) <= 1, f"job {job_id} is spread over {len(traces)} traces"
    return [s for s in spans if s.trace_id in traces]


def json_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("{")]


def consumed(spans: list[ReceivedSpan], subject: str) -> list[ReceivedSpan]:
    return [
        s
        for s in spans
        if s.kind == Kind.SPAN_KIND_CONSUMER
        and s.attributes.get("messaging.destination.name") == subject
    ]


def assert_consumers_are_children_of_their_publish(trace: list[ReceivedSpan]) -> None:
    producers = {
        s.span_id: s.attributes["messaging.message.id"]
        for s in trace
        if s.kind == Kind.SPAN_KIND_PRODUCER
    }
    consumers = [s for s in trace if s.kind == Kind.SPAN_KIND_CONSUMER]
    assert consumers
    for span in consumers:
        assert span.parent_span_id in producers, span
        assert producers[span.parent_span_id] == span.attributes["messaging.message.id"]


def test_one_refresh_is_one_trace_across_gateway_sync_and_merge(
    fresh_nats: NatsServer, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    with FakeGithub(token=TOKEN) as github:
        populate(github, "octo", 4)
        mesh = Mesh(
            fresh_nats.url,
            tmp_path,
            env={
                **receiver.env(),
                "CONTEXTMESH_SOURCE": "github",
                "CONTEXTMESH_GITHUB_API_URL": github.url,
                "GITHUB_TOKEN": TOKEN,
            },
        )
        try:
            mesh.start("gateway")
            mesh.start("syncsvc")
            mesh.start("mergesvc")
            # The CLI starts the trace: its gRPC call is the root span.
            cli = subprocess.run(
                [sys.executable, "-m", "meshctl", "refresh", "octo", "--watch"],
                capture_output=True,
                text=True,
                timeout=60,
                env={
                    **mesh.env,
                    "CONTEXTMESH_TARGET": mesh.gateway_target,
                    "CONTEXTMESH_TOKEN": mesh.admin_token,
                },
            )
            assert cli.returncode == 0, cli.stdout + cli.stderr + mesh.logs()
            job_id = cli.stdout.split()[1]

            spans = receiver.wait_for(
                lambda spans: (
                    len(consumed(refresh_trace(spans, job_id), MERGE.subject)) >= 1
                    and len(consumed(refresh_trace(spans, job_id), SYNC.subject)) >= 4
                )
            )
        finally:
            mesh.stop_all()

    trace = refresh_trace(spans, job_id)
    assert {s.service for s in trace} >= {"gateway", "syncsvc", "mergesvc"}
    (root,) = [s for s in trace if s.parent_span_id == ""]
    assert (root.service, root.kind, root.name) == (
        "contextmesh-cli",
        Kind.SPAN_KIND_CLIENT,
        REFRESH_METHOD,
    )
    (server,) = [s for s in trace if s.parent_span_id == root.span_id]
    assert (server.service, server.kind, server.name) == (
        "gateway",
        Kind.SPAN_KIND_SERVER,
        REFRESH_METHOD,
    )
    assert_consumers_are_children_of_their_publish(trace)
    for span in consumed(trace, SYNC.subject):
        assert span.attributes["contextmesh.job_id"] == job_id
        assert span.attributes["contextmesh.user"] == "octo"
        assert span.attributes["contextmesh.stream"] == "SYNC"

    github_gets = [s for s in trace if s.name == "GitHub GET"]
    assert github_gets
    by_id = {s.span_id: s for s in trace}
    for span in github_gets:
        assert by_id[span.parent_span_id].kind == Kind.SPAN_KIND_CONSUMER
        assert span.attributes["http.response.status_code"] in (200, 304, 404)
        assert "?" not in str(span.attributes["url.path"])

    # The job's log lines point into its trace, at the span that wrote them.
    span_ids = {s.span_id for s in trace}
    job_lines = [
        line
        for name in ("syncsvc", "mergesvc")
        for line in map(json.loads, json_lines(mesh.log_path(name)))
        if line.get("job_id") == job_id
    ]
    assert {line["service"] for line in job_lines} == {"syncsvc", "mergesvc"}
    for line in job_lines:
        assert line["trace_id"] == root.trace_id and line["span_id"] in span_ids, line

    # The token never reaches a collector: not in any span of any trace.
    everything = repr(receiver.spans)
    assert TOKEN not in everything


def test_a_redelivered_sync_task_after_a_sigkill_continues_the_same_trace(
    fresh_nats: NatsServer, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    source = tmp_path / "source"
    repos = 200
    for i in range(repos):
        write_repo(source, "bob", f"repo-{i:03d}", description=f"Repository {i}", tech=["Go"])
    mesh = Mesh(
        fresh_nats.url,
        tmp_path,
        env={
            **receiver.env(),
            "CONTEXTMESH_SOURCE": "local",
            "CONTEXTMESH_LOCAL_SOURCE_DIR": str(source),
            "CONTEXTMESH_SYNC_CONCURRENCY": "4",
        },
    )
    try:
        mesh.start("gateway")
        mesh.start("syncsvc", name="victim")
        mesh.start("mergesvc")
        with mesh.channel() as channel:
            stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
            job_id = stub.RefreshBundle(pb.RefreshBundleRequest(user="bob")).job.id
            killed = False
            for update in stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=90):
                if not killed and update.job.synced >= 40:
                    assert update.job.synced < repos, "finished before the kill; make it bigger"
                    # The victim is mid-batch: what it holds is redelivered to the survivor.
                    mesh.kill("victim")
                    mesh.start("syncsvc", name="survivor")
                    killed = True
                final = update
        assert killed
        assert final.job.state == JobState.JOB_STATE_DONE, mesh.logs()

        def redelivered(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
            return [
                s
                for s in consumed(refresh_trace(spans, job_id), SYNC.subject)
                if s.attributes["contextmesh.delivery"] != 1
            ]

        spans = receiver.wait_for(lambda spans: bool(redelivered(spans)))
    finally:
        mesh.stop_all()

    trace = refresh_trace(spans, job_id)
    producers = {s.span_id: s for s in trace if s.kind == Kind.SPAN_KIND_PRODUCER}
    for span in redelivered(spans):
        parent = producers[span.parent_span_id]
        assert parent.attributes["messaging.message.id"] == span.attributes["messaging.message.id"]


@pytest.mark.slow  # trains the tiny model and loads it for search
def test_training_and_search_continue_their_callers_traces(
    fresh_nats: NatsServer, tmp_path: Path, receiver: OtlpReceiver, tiny_model_dir: Path
) -> None:
    with FakeGithub(token=TOKEN) as github:
        populate(github, "octo", 4)
        mesh = Mesh(
            fresh_nats.url,
            tmp_path,
            env={
                **receiver.env(),
                "CONTEXTMESH_SOURCE": "github",
                "CONTEXTMESH_GITHUB_API_URL": github.url,
                "GITHUB_TOKEN": TOKEN,
                "CONTEXTMESH_TRAINING": "on",
                "CONTEXTMESH_BASE_MODEL": str(tiny_model_dir),
                "CONTEXTMESH_TRAIN_DEVICE": "cpu",
            },
        )
        cli_env = {
            **mesh.env,
            "CONTEXTMESH_TARGET": mesh.gateway_target,
            "CONTEXTMESH_TOKEN": mesh.admin_token,
        }
        try:
            for name in ("gateway", "syncsvc", "mergesvc", "trainsvc", "searchsvc"):
                mesh.start(name)
            # --watch follows the job through its training to the end.
            refresh = subprocess.run(
                [sys.executable, "-m", "meshctl", "refresh", "octo", "--watch"],
                capture_output=True,
                text=True,
                timeout=240,
                env=cli_env,
            )
            assert refresh.returncode == 0, refresh.stdout + refresh.stderr + mesh.logs()
            job_id = refresh.stdout.split()[1]
            mesh.wait_serving(f"127.0.0.1:{mesh.search_port}", "searchsvc", 120.0)
            search = subprocess.run(
                [sys.executable, "-m", "meshctl", "search", "octo", "repository one"],
                capture_output=True,
                text=True,
                timeout=120,
                env=cli_env,
            )
            assert search.returncode == 0, search.stdout + search.stderr + mesh.logs()

            spans = receiver.wait_for(
                lambda spans: (
                    bool(consumed(refresh_trace(spans, job_id), TRAIN.subject))
                    and search_chain(spans) is not None  # every service exports on its own
                )
            )
        finally:
            mesh.stop_all()

    # The training task is a consumer span of the refresh's trace, under mergesvc's publish.
    trace = refresh_trace(spans, job_id)
    (training,) = consumed(trace, TRAIN.subject)
    assert training.service == "trainsvc"
    assert_consumers_are_children_of_their_publish(trace)
    by_id = {s.span_id: s for s in trace}
    assert by_id[training.parent_span_id].service == "mergesvc"

    # The search: CLI -> gateway SearchBundle -> gateway's client call -> searchsvc, one trace.
    chain = search_chain(spans)
    assert chain is not None
    assert [(s.service, s.kind) for s in chain] == [
        ("searchsvc", Kind.SPAN_KIND_SERVER),
        ("gateway", Kind.SPAN_KIND_CLIENT),
        ("gateway", Kind.SPAN_KIND_SERVER),
        ("contextmesh-cli", Kind.SPAN_KIND_CLIENT),
    ]
    assert chain[2].name == chain[3].name == "/contextmesh.gateway.v1.BundleService/SearchBundle"
    assert TOKEN not in repr(receiver.spans)


def search_chain(spans: list[ReceivedSpan]) -> list[ReceivedSpan] | None:
    """searchsvc's Search span and its ancestors up to the root, once all have arrived."""
    servers = [s for s in spans if s.name == SEARCH_METHOD and s.service == "searchsvc"]
    if len(servers) != 1:
        return None
    (server,) = servers
    by_id = {s.span_id: s for s in spans if s.trace_id == server.trace_id}
    chain = [server]
    while chain[-1].parent_span_id:
        parent = by_id.get(chain[-1].parent_span_id)
        if parent is None:
            return None
        chain.append(parent)
    return chain
