"""`contextmesh up --cluster`: what k8s/ deploys, on one machine (issue 14). Three nats-servers
in one JetStream cluster with every stream and bucket R3, two replicas of every service,
replicas of one service on different servers, and a refresh through REST that Envoy balances
over both gateways."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import nats
import pytest

from meshkit.nats_auth import ADMIN, inbox_prefix, seed_path
from meshkit.topology import ALL_BUCKETS, ALL_WORK_STREAMS, DEADLETTER
from tests.e2e.up_support import processes_using, start_up
from tests.support.ports import free_port, free_ports_in_a_row

pytestmark = pytest.mark.slow


async def replicas_of_every_stream(url: str, seed: Path) -> dict[str, int]:
    nc = await nats.connect(url, nkeys_seed=str(seed), inbox_prefix=inbox_prefix(ADMIN))
    try:
        js = nc.jetstream()
        names = [ws.stream for ws in ALL_WORK_STREAMS] + [DEADLETTER]
        names += [f"KV_{bucket.name}" for bucket in ALL_BUCKETS]
        return {name: (await js.stream_info(name)).config.num_replicas for name in names}
    finally:
        await nc.close()


def children_of(parent: int) -> list[int]:
    """Pids whose parent is `parent`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name (2nd field) is in parentheses and may hold spaces.
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def nats_url_of(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for item in environ:
        if item.startswith(b"CONTEXTMESH_NATS_URL="):
            return item.split(b"=", 1)[1].decode()
    return ""


def test_up_cluster_runs_three_servers_r3_and_two_replicas_of_each_service(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    ports = {name: free_port() for name in ("grpc", "rest", "search", "admin")}
    ports["nats"] = free_ports_in_a_row(3)
    log = tmp_path / "up.log"
    up = start_up(data_dir, ports, log, options=["--cluster"])
    try:
        banner = log.read_text()
        assert "a cluster of 3 servers, every stream and bucket R3" in banner
        assert all(f"nats://127.0.0.1:{ports['nats'] + i}" in banner for i in range(3))
        seed = seed_path(data_dir / "nats" / "auth", ADMIN)
        replicas = asyncio.run(replicas_of_every_stream(f"nats://127.0.0.1:{ports['nats']}", seed))
        assert set(replicas.values()) == {3}, replicas

        # Replicas of one service talk to different servers.
        by_service: dict[str, set[str]] = {}
        for pid in children_of(up.pid):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"-m" in cmdline:
                module = cmdline[cmdline.index(b"-m") + 1].decode()
                by_service.setdefault(module, set()).add(nats_url_of(pid))
        for module in ("gateway", "mergesvc", "notifysvc", "searchsvc"):
            assert len(by_service.get(module, ())) == 2, (module, by_service)

        token = (data_dir / "auth" / "admin.token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{ports['rest']}"
        job = httpx.post(
            f"{base}/v1/users/demo/bundle:refresh", json={}, headers=auth, timeout=30
        ).json()["job"]
        with httpx.stream(
            "GET", f"{base}/v1/jobs/{job['id']}:watch", headers=auth, timeout=120
        ) as watch:
            last = [line for line in watch.iter_lines() if line.strip()][-1]
        assert '"JOB_STATE_DONE"' in last, last + log.read_text()
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(120) == 0
    assert not [p for p in processes_using(str(data_dir)) if p != os.getpid()]
