"""The services as separate processes, as they run in production, for end-to-end tests.

mesh = Mesh(nats_url, tmp_path, env={...})
mesh.start("gateway"); mesh.start("syncsvc", name="syncsvc-1"); mesh.start("mergesvc")
mesh.start("notifysvc")     # callbacks, for the tests that register one
...
mesh.kill("syncsvc-1")      # SIGKILL, as a crash
mesh.stop_all()

Every process serves Prometheus metrics on a port of its own (`mesh.metrics[name]`), listed in
`mesh.targets_file` as `contextmesh up` lists its own.

Auth is on, as everywhere: the services trust a signing key of the mesh's own (or the one
passed in); `mesh.channel()` authenticates as an admin, `mesh.token(...)` mints others.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc

from meshctl.launch import Child, grpc_health_ready, launch
from meshctl.metrics_targets import TARGETS_FILE, MetricsTarget, write_targets
from meshkit.bearer import bearer_channel
from meshkit.signing import LocalSigner
from tests.support.auth import auth_env
from tests.support.ports import free_port

__all__ = ["Mesh"]

ROOT = Path(__file__).resolve().parents[2]


class Mesh:
    def __init__(
        self,
        nats_url: str,
        workdir: Path,
        env: dict[str, str] | None = None,
        *,
        signer: LocalSigner | None = None,
    ) -> None:
        self.workdir = workdir
        self.gateway_port = free_port()
        self.admin_port = free_port()
        self.search_port = free_port()
        self.signer = signer or LocalSigner.open(workdir / "auth")
        self.admin_token = self.signer.mint(users=["*"], admin=True, ttl_s=86400)
        self.env = {
            **os.environ,
            **auth_env(self.signer),
            "CONTEXTMESH_NATS_URL": nats_url,
            "CONTEXTMESH_DATA_DIR": str(workdir / "data"),
            "CONTEXTMESH_GATEWAY_ADDR": f"127.0.0.1:{self.gateway_port}",
            "CONTEXTMESH_ADMIN_ADDR": f"127.0.0.1:{self.admin_port}",
            "CONTEXTMESH_SEARCH_ADDR": f"127.0.0.1:{self.search_port}",
            "CONTEXTMESH_TRAINING": "off",
            "CONTEXTMESH_LOG_LEVEL": "info",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            **(env or {}),
        }
        self.procs: dict[str, Child] = {}
        self.metrics: dict[str, MetricsTarget] = {}
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        (workdir / "data").mkdir(parents=True, exist_ok=True)

    @property
    def targets_file(self) -> Path:
        """The Prometheus file_sd list of the running processes' /metrics, as `up` writes."""
        return self.workdir / "data" / TARGETS_FILE

    @property
    def gateway_target(self) -> str:
        return f"127.0.0.1:{self.gateway_port}"

    @property
    def admin_target(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def token(self, *users: str, admin: bool = False) -> str:
        return self.signer.mint(users=list(users), admin=admin, ttl_s=3600)

    def channel(self, token: str | None = None, *, target: str | None = None) -> grpc.Channel:
        """A channel to the gateway (or `target`) sending `token`, by default the admin's."""
        return bearer_channel(target or self.gateway_target, token or self.admin_token)

    def log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def start(
        self, module: str, *, name: str | None = None, env: dict[str, str] | None = None
    ) -> Child:
        """Run `python -m module` (as `name`, logging to log_path(name)); the gateway is
        awaited until it serves."""
        name = name or module
        target = MetricsTarget(name, module, free_port())
        child = launch(
            [sys.executable, "-m", module],
            name=name,
            log=self.log_path(name),
            cwd=ROOT,
            env={
                **self.env,
                "CONTEXTMESH_METRICS_HOST": target.host,
                "CONTEXTMESH_METRICS_PORT": str(target.port),
                **(env or {}),
            },
        )
        self.procs[name] = child
        self.metrics[name] = target
        write_targets(self.targets_file, self.metrics.values())
        if module == "gateway":
            self.wait_serving(self.gateway_target, name)
        return child

    def wait_serving(
        self, target: str, name: str, timeout: float = 30.0, *, service: str = ""
    ) -> None:
        """Until `target` answers SERVING for `service` ('' is the server as a whole; grpc's
        health servicer reports '' SERVING from the start, so name a service to wait on a
        server whose services turn SERVING later, as searchsvc's do once its model loads).
        Raises ChildExitedError or ChildNotReadyError (a TimeoutError) with the log's end."""
        self.procs[name].wait_ready(grpc_health_ready(target, service), timeout, interval=0.1)

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash would."""
        self.procs.pop(name).kill()
        self._forget_metrics(name)

    def stop(self, name: str, timeout: float = 15.0) -> int | None:
        """SIGTERM, SIGKILL after `timeout` seconds; the exit code."""
        code = self.procs.pop(name).stop(timeout)
        self._forget_metrics(name)
        return code

    def _forget_metrics(self, name: str) -> None:
        self.metrics.pop(name, None)
        write_targets(self.targets_file, self.metrics.values())

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name, timeout=10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-4000:]}"
            for p in sorted((self.workdir / "logs").glob("*.log"))
        )
