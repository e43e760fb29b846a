"""`contextmesh up`: everything starts, answers, stops cleanly, and comes back with its data.

It is safe by default: every listener on loopback, authentication on with a signing key of
its own (kept across restarts), the CLI using the admin token it writes, `contextmesh token`
minting user tokens, and the admin plane on its own port.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc

from meshkit.bearer import bearer_channel
from tests.e2e.up_support import BIN, cli, processes_using, start_up
from tests.support.ports import free_port


def listening_hosts(port: int) -> set[str]:
    """The local addresses with a socket listening on `port`, from /proc/net/tcp{,6}."""
    hosts = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # The kernel prints each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, size, 4))
                ip = ipaddress.ip_address(words)
                # An IPv6 socket bound to ::ffff:127.0.0.1 (gRPC does this) is IPv4 loopback.
                mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
                hosts.add(str(mapped or ip))
    return hosts


def test_up_serves_refreshes_stops_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ports = {name: free_port() for name in ("grpc", "rest", "nats", "search", "admin")}
    log = tmp_path / "up.log"
    target = f"localhost:{ports['grpc']}"
    # The CLI finds up's admin token in the data directory: no token to pass by hand.
    env = {
        **{k: v for k, v in os.environ.items() if k != "CONTEXTMESH_TOKEN"},
        "CONTEXTMESH_TARGET": target,
        "CONTEXTMESH_ADMIN_TARGET": f"localhost:{ports['admin']}",
        "CONTEXTMESH_DATA_DIR": str(data_dir),
    }
    proc = start_up(data_dir, ports, log)
    key = (data_dir / "auth" / "signing-key.pem").read_bytes()
    try:
        for name in ("grpc", "rest", "admin"):
            assert listening_hosts(ports[name]) == {"127.0.0.1"}, name
        assert (data_dir / "auth" / "signing-key.pem").stat().st_mode & 0o077 == 0
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
        token = cli(env, "token", "--user", "demo", "--ttl", "10m").stdout.strip()
        first_hash = bundle_hash(target, token)

        # A user token from `contextmesh token` works for its user only, from the CLI too.
        as_demo = {**env, "CONTEXTMESH_TOKEN": token}
        assert "bundle" in cli(as_demo, "bundle", "demo").stdout
        other = cli(as_demo, "bundle", "someone-else", check=False)
        assert other.returncode == 1 and "PERMISSION_DENIED" in other.stderr
        anonymous = cli(
            {**env, "CONTEXTMESH_DATA_DIR": str(tmp_path / "nowhere")},
            "bundle",
            "demo",
            check=False,
        )
        assert "UNAUTHENTICATED" in anonymous.stderr and "contextmesh token" in anonymous.stderr
        # The admin plane: up's admin token may list dead letters; a user token may not.
        assert cli(env, "deadletters").returncode == 0
        assert "PERMISSION_DENIED" in cli(as_demo, "deadletters", check=False).stderr

        # REST through the Envoy that up started: the same job, as JSON, streamed to its end.
        base = f"http://127.0.0.1:{ports['rest']}"
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/v1/users/demo/bundle", timeout=10).status_code == 401
        job = httpx.post(
            f"{base}/v1/users/demo/bundle:refresh", json={}, headers=auth, timeout=10
        ).json()["job"]
        with httpx.stream(
            "GET", f"{base}/v1/jobs/{job['id']}:watch", headers=auth, timeout=60
        ) as response:
            lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
        assert lines[-1]["final"] is True and lines[-1]["job"]["state"] == "JOB_STATE_DONE"

        # The user's history: both jobs, newest first, each on a line of its own.
        first_job = refresh.stdout.split()[1]
        history = cli(as_demo, "jobs", "demo").stdout.splitlines()
        assert [line.split()[0] for line in history] == [job["id"], first_job]
        assert all("Done" in line for line in history)
        assert cli(as_demo, "jobs", "demo", "--limit", "1").stdout.split()[0] == job["id"]

        # Scheduled refreshes: set, read back, stopped.
        assert "demo: every 6h, next " in cli(as_demo, "schedule", "demo", "--every", "6h").stdout
        assert "every 6h" in cli(as_demo, "schedule", "demo").stdout
        cli(as_demo, "schedule", "demo", "--off")
        gone = cli(as_demo, "schedule", "demo", check=False)
        assert gone.returncode == 1 and "NOT_FOUND" in gone.stderr

        # Every service process serves /metrics on a loopback port the banner prints and the
        # Prometheus file_sd list names.
        targets = json.loads((data_dir / "prometheus-targets.json").read_text())
        services = sorted(entry["labels"]["service"] for entry in targets)
        assert {"gateway", "mergesvc"} <= set(services) and services.count("syncsvc") == 2
        for entry in targets:
            (address,) = entry["targets"]
            assert address in log.read_text()
            assert "contextmesh_tasks_total" in metrics_of(address)
            assert listening_hosts(int(address.rpartition(":")[2])) == {"127.0.0.1"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    assert processes_using(str(data_dir)) == []  # nothing left behind

    log = tmp_path / "up-again.log"
    proc = start_up(data_dir, ports, log)  # the same data directory
    try:
        # The same signing key: a token minted before the restart still verifies.
        assert (data_dir / "auth" / "signing-key.pem").read_bytes() == key
        assert bundle_hash(target, token) == first_hash
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert processes_using(str(data_dir)) == []


def metrics_of(address: str, timeout: float = 30.0) -> str:
    """The /metrics page at address, once it answers (searchsvc loads torch first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(f"http://{address}/metrics", timeout=5).raise_for_status().text
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"no metrics at {address}"
            time.sleep(0.5)


def bundle_hash(target: str, token: str) -> str:
    with bearer_channel(target, token) as channel:
        stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
        return stub.GetBundle(pb.GetBundleRequest(user="demo"), timeout=10).bundle.content_hash
