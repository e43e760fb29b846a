"""Health follows NATS: NOT_SERVING while it is unreachable or the service drains."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshctl.nats_server import NatsServer
from tests.support.mesh import Mesh
from tests.support.ports import free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def status(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


def wait_for(target: str, wanted: int, service: str = "", limit_s: float = 20) -> None:
    deadline = time.monotonic() + limit_s
    seen: int | str = "no answer"
    while True:
        try:
            seen = status(target, service)
        except grpc.RpcError:
            seen = "no answer"  # not listening yet
        if seen == wanted:
            return
        assert time.monotonic() < deadline, f"health stayed {seen}, wanted {wanted}"
        time.sleep(0.1)


def test_gateway_and_worker_health_follow_nats(fresh_nats: NatsServer, tmp_path: Path) -> None:
    worker_health = f"127.0.0.1:{free_port()}"
    mesh = Mesh(
        fresh_nats.url,
        tmp_path,
        env={"CONTEXTMESH_SOURCE": "local", "CONTEXTMESH_LOCAL_SOURCE_DIR": str(tmp_path)},
    )
    try:
        mesh.start("gateway")
        mesh.start("mergesvc", env={"CONTEXTMESH_HEALTH_ADDR": worker_health})
        gateway = mesh.gateway_target
        wait_for(gateway, SERVING, "contextmesh.gateway.v1.BundleService")
        wait_for(worker_health, SERVING)

        fresh_nats.stop()
        wait_for(gateway, NOT_SERVING)
        wait_for(gateway, NOT_SERVING, "contextmesh.gateway.v1.BundleService")
        wait_for(worker_health, NOT_SERVING)

        fresh_nats.start()  # same port, same store: clients reconnect
        wait_for(gateway, SERVING, limit_s=30)
        wait_for(worker_health, SERVING, limit_s=30)

        # Draining: SIGTERM turns health NOT_SERVING before the server stops answering.
        proc = mesh.procs["gateway"]
        proc.signal(signal.SIGTERM)
        saw_not_serving = False
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                saw_not_serving |= status(gateway) == NOT_SERVING
            except grpc.RpcError:
                break
            time.sleep(0.05)
        assert proc.wait(15) == 0
        assert saw_not_serving
    finally:
        mesh.stop_all()
