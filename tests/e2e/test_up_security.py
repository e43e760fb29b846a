"""`contextmesh up` with locked-down NATS: the generated identities are enough for a full
refresh, no more; secrets reach only the process that needs them; a tampered pointer is not
served."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
from pathlib import Path

import grpc
import nats
import pytest
from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.ops.v1 import ops_service_pb2 as ops
from contextmesh.ops.v1 import ops_service_pb2_grpc
from nats.aio.client import Client

from meshkit import nats_auth
from meshkit.bearer import bearer_channel
from tests.e2e.up_support import BIN, start_up
from tests.support.ports import free_port

TOKEN = "ghp_e2eSecretTokenValue0123456789"


def children(pid: int) -> dict[int, str]:
    """Direct children of pid: their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError, ValueError):
            continue
    return {p: c.decode(errors="replace") for p, c in found.items()}


def environ(pid: int) -> dict[str, str]:
    pairs = (Path(f"/proc/{pid}/environ").read_bytes()).split(b"\0")
    return dict(p.decode(errors="replace").split("=", 1) for p in pairs if b"=" in p)


async def tamper(url: str, admin_seed: Path, victim: str, owner: str) -> None:
    """What an attacker with write access would do: point victim at owner's bundle."""
    nc = await nats.connect(
        url, nkeys_seed=str(admin_seed), inbox_prefix=nats_auth.inbox_prefix(nats_auth.ADMIN)
    )
    try:
        kv = await nc.jetstream().key_value("cm_bundles")
        entry = await kv.get(owner)
        stolen = bundle_pb2.BundlePointer()
        stolen.ParseFromString(entry.value or b"")
        stolen.job_id = "ZZZZZZZZZZZZZZZZZZZZZZZZZZ"  # "newer" than any job bob will run
        await kv.put(victim, stolen.SerializeToString())
    finally:
        await nc.close()


async def anonymous_refused(url: str) -> None:
    client = Client()
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await client.connect(url, allow_reconnect=False, connect_timeout=2)
    await client.close()


def test_up_runs_a_refresh_on_least_privilege_nats_and_keeps_secrets_apart(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    ports = {name: free_port() for name in ("grpc", "rest", "nats", "search", "admin")}
    log = tmp_path / "up.log"
    target = f"localhost:{ports['grpc']}"
    nats_url = f"nats://127.0.0.1:{ports['nats']}"
    env = {
        **os.environ,
        "GITHUB_TOKEN": TOKEN,
        "CONTEXTMESH_TARGET": target,
        "CONTEXTMESH_DATA_DIR": str(data_dir),  # the CLI finds up's admin token there
    }
    proc = start_up(data_dir, ports, log, env=env)
    try:
        # Only syncsvc has the GitHub token; every service has its own NATS identity.
        kids = children(proc.pid)
        assert any("-m gateway" in c for c in kids.values()), kids
        for pid, cmdline in kids.items():
            child_env = environ(pid)
            has_token = TOKEN in child_env.values()
            assert has_token == ("-m syncsvc" in cmdline), (cmdline, has_token)
            if " -m " in cmdline:
                service = cmdline.split(" -m ", 1)[1].split()[0]
                assert child_env["CONTEXTMESH_NATS_USER"] == service
                seed = Path(child_env["CONTEXTMESH_NATS_NKEY_SEED_FILE"])
                assert seed == nats_auth.seed_path(data_dir / "nats" / "auth", service)
                assert stat.S_IMODE(seed.stat().st_mode) == 0o600
        config = data_dir / "nats" / "nats-server.conf"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert "authorization {" in config.read_text() and "http:" not in config.read_text()
        asyncio.run(anonymous_refused(nats_url))

        refresh = subprocess.run(
            [str(BIN / "contextmesh"), "refresh", "demo", "--watch"],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )
        assert refresh.returncode == 0, refresh.stdout + refresh.stderr + log.read_text()
        assert "Done" in refresh.stdout

        admin_seed = nats_auth.seed_path(data_dir / "nats" / "auth", nats_auth.ADMIN)
        asyncio.run(tamper(nats_url, admin_seed, victim="bob", owner="demo"))
        token = (data_dir / "auth" / "admin.token").read_text().strip()
        with bearer_channel(target, token) as channel:
            stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
            assert stub.GetBundle(pb.GetBundleRequest(user="demo"), timeout=10).bundle.blob_key
            for call in (
                lambda: stub.GetBundle(pb.GetBundleRequest(user="bob"), timeout=10),
                lambda: list(stub.DownloadBundle(pb.DownloadBundleRequest(user="bob"), timeout=10)),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "RefreshBundle" in (refused.value.details() or "")
        # The ops path runs on its own identity, behind the admin listener.
        with bearer_channel(f"localhost:{ports['admin']}", token) as channel:
            ops_stub = ops_service_pb2_grpc.OpsServiceStub(channel)
            ops_stub.ListDeadLetters(ops.ListDeadLettersRequest(), timeout=10)
            # The retention sweep reads every reference and fences in cm_retention.
            ops_stub.CollectGarbage(ops.CollectGarbageRequest(dry_run=True), timeout=60)
            swept = ops_stub.CollectGarbage(ops.CollectGarbageRequest(), timeout=60)
            assert [k.kind for k in swept.kinds] == [
                "bundles",
                "models",
                "repos",
                "http-cache",
                "jobs",
            ]
        with bearer_channel(target, token) as channel:
            stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
            assert list(stub.DownloadBundle(pb.DownloadBundleRequest(user="demo"), timeout=10))

        # The permissions were enough: the server refused nothing the mesh did.
        violations = [line for line in nats_log(data_dir) if "Violation" in line]
        assert violations == [], violations
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()


def nats_log(data_dir: Path) -> list[str]:
    return (data_dir / "logs" / "nats.log").read_text(errors="replace").splitlines()
