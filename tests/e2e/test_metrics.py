"""Every service's metrics, scraped by a real Prometheus, and an alert that fires (issue 13).

The mesh runs as separate processes, each serving /metrics on its own port and listed in the
same file_sd file `contextmesh up` writes; Prometheus (Debian's package) scrapes that list
every second and evaluates k8s/observability/alert-rules.yaml.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2

from meshctl.nats_server import NatsServer
from meshkit.config import NatsSettings
from meshkit.nats_client import connect
from meshkit.topology import SYNC
from tests.support.fake_github import FakeGithub, populate
from tests.support.mesh import Mesh
from tests.support.prometheus import Prometheus

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "k8s" / "observability" / "alert-rules.yaml"
MARKER = "ghp_" + "M" * 36
REFRESH = "/contextmesh.gateway.v1.BundleService/RefreshBundle"
SERVICES = ("gateway", "syncsvc", "mergesvc")


def test_the_alert_rules_pass_promtool() -> None:
    checked = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


async def publish_undecodable(url: str) -> None:
    """A SYNC task no worker can ever decode: it is parked on its first delivery."""
    nc, js = await connect(NatsSettings(url=url), name="test")
    try:
        await js.publish(SYNC.subject, b"\xff\xff not a task", headers={"Nats-Msg-Id": "garbage"})
    finally:
        await nc.drain()


def test_prometheus_scrapes_every_service_and_the_dead_letter_alert_fires(
    fresh_nats: NatsServer, tmp_path: Path
) -> None:
    with FakeGithub(token=MARKER) as github:
        populate(github, "octo", 4)
        mesh = Mesh(
            fresh_nats.url,
            tmp_path,
            env={
                "CONTEXTMESH_SOURCE": "github",
                "CONTEXTMESH_GITHUB_API_URL": github.url,
                "GITHUB_TOKEN": MARKER,
                # Stream gauges (DEADLETTER's above all) are read this often.
                "CONTEXTMESH_CAPACITY_CHECK_S": "1",
            },
        )
        prometheus = Prometheus(tmp_path / "prometheus", targets=mesh.targets_file, rules=[RULES])
        try:
            for service in SERVICES:
                mesh.start(service)
            prometheus.start()
            with mesh.channel() as channel:
                stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
                job_id = stub.RefreshBundle(pb.RefreshBundleRequest(user="octo")).job.id
                *_, last = stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=60)
            assert last.job.state == job_pb2.JOB_STATE_DONE, mesh.logs()

            # Every process is a target, and up.
            up = prometheus.wait_for(
                lambda: (
                    samples
                    if len(samples := prometheus.query("up == 1")) == len(SERVICES)
                    else None
                )
            )
            assert {s["metric"]["service"] for s in up} == set(SERVICES)

            def scraped(promql: str, at_least: float = 1) -> float:
                return prometheus.wait_for(
                    lambda: v if (v := prometheus.value(promql)) and v >= at_least else None
                )

            assert scraped('sum(contextmesh_jobs_started_total{service="gateway"})') == 1
            assert scraped('sum(contextmesh_jobs_finished_total{state="DONE"})') == 1
            assert scraped('sum(contextmesh_tasks_total{stream="SYNC",outcome="ack"})', 4) >= 4
            assert scraped('sum(contextmesh_tasks_total{stream="MERGE",outcome="ack"})') >= 1
            refreshes = f'method="{REFRESH}",code="OK",service="gateway"'
            assert scraped(f"sum(contextmesh_rpc_requests_total{{{refreshes}}})") == 1
            assert scraped('sum(contextmesh_github_requests_total{status="200"})', 4) >= 4
            assert scraped('max(contextmesh_github_rate_limit_remaining{service="syncsvc"})') > 0

            # A task that can never succeed is parked; the dead-letter alert fires.
            asyncio.run(publish_undecodable(fresh_nats.url))
            assert scraped('sum(contextmesh_tasks_total{stream="SYNC",outcome="parked"})') == 1
            assert scraped('sum(contextmesh_dead_letters_total{stream="SYNC"})') == 1
            firing = prometheus.wait_for(
                lambda: [
                    a
                    for a in prometheus.alerts()
                    if a["labels"]["alertname"] == "ContextmeshDeadLetters"
                    and a["state"] == "firing"
                ]
            )
            assert firing[0]["labels"]["stream"] == "DEADLETTER"

            # No scrape carries the token, a user or a job id; no log carries the token.
            for target in mesh.metrics.values():
                body = httpx.get(f"http://{target.address}/metrics", timeout=5).text
                assert "# TYPE contextmesh_rpc_requests_total counter" in body
                for secret in (MARKER, job_id, "octo"):
                    assert secret not in body, (target.process, secret)
        finally:
            prometheus.stop()
            mesh.stop_all()
    for log in (tmp_path / "logs").glob("*.log"):
        assert MARKER not in log.read_text(), log
