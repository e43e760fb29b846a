"""`contextmesh up`: everything starts, answers, stops cleanly, and comes back with its data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def processes_using(marker: str) -> list[int]:
    """Pids whose command line mentions marker (our data dir), read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def start_up(
    data_dir: Path, ports: dict[str, int], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "contextmesh"),
                "up",
                "--data-dir",
                str(data_dir),
                "--no-training",
                "--grpc-port",
                str(ports["grpc"]),
                "--rest-port",
                str(ports["rest"]),
                "--nats-port",
                str(ports["nats"]),
                "--search-port",
                str(ports["search"]),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while "contextmesh is up" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return proc


def test_up_serves_refreshes_stops_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ports = {name: free_port() for name in ("grpc", "rest", "nats", "search")}
    log = tmp_path / "up.log"
    target = f"localhost:{ports['grpc']}"
    env = {**os.environ, "CONTEXTMESH_TARGET": target}
    proc = start_up(data_dir, ports, log)
    try:
        listed = subprocess.run(
            [str(BIN / "grpcurl"), "-plaintext", target, "list"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert {
            "contextmesh.gateway.v1.BundleService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= set(listed)
        refresh = subprocess.run(
            [str(BIN / "contextmesh"), "refresh", "demo", "--watch"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert refresh.returncode == 0, refresh.stdout + refresh.stderr + log.read_text()
        assert "Done" in refresh.stdout and "synced" in refresh.stdout
        first_hash = bundle_hash(target)

        # REST through the Envoy that up started: the same job, as JSON, streamed to its end.
        base = f"http://127.0.0.1:{ports['rest']}"
        job = httpx.post(f"{base}/v1/users/demo/bundle:refresh", json={}, timeout=10).json()["job"]
        with httpx.stream("GET", f"{base}/v1/jobs/{job['id']}:watch", timeout=60) as response:
            lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
        assert lines[-1]["final"] is True and lines[-1]["job"]["state"] == "JOB_STATE_DONE"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    assert processes_using(str(data_dir)) == []  # nothing left behind

    log = tmp_path / "up-again.log"
    proc = start_up(data_dir, ports, log)  # the same data directory
    try:
        assert bundle_hash(target) == first_hash
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert processes_using(str(data_dir)) == []


def bundle_hash(target: str) -> str:
    with grpc.insecure_channel(target) as channel:
        stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
        return stub.GetBundle(pb.GetBundleRequest(user="demo"), timeout=10).bundle.content_hash
