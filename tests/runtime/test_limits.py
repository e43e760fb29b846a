"""Byte bounds on every stream and bucket: a flood cannot fill the NATS store, and a full work
stream refuses new tasks with a clear error instead of dropping accepted ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from contextmesh.task.v1 import task_pb2
from nats.js.api import DiscardPolicy

from meshctl.nats_server import NatsServer
from meshkit.config import NatsSettings, Settings
from meshkit.errors import ConfigError, StreamFullError
from meshkit.nats_client import connect
from meshkit.publish import publish_task
from meshkit.topology import ALL_BUCKETS, ALL_WORK_STREAMS, DEADLETTER, DISCOVER, declare


async def test_every_stream_and_bucket_has_a_byte_bound(fresh_nats: NatsServer) -> None:
    nc, js = await connect(NatsSettings(url=fresh_nats.url), name="limits")
    try:
        await declare(js)
        for ws in ALL_WORK_STREAMS:
            config = (await js.stream_info(ws.stream)).config
            assert config.max_bytes == ws.max_bytes > 0
            assert config.discard == DiscardPolicy.NEW  # never drop accepted work
        assert (await js.stream_info(DEADLETTER)).config.max_bytes > 0
        for bucket in ALL_BUCKETS:
            config = (await js.stream_info(f"KV_{bucket.name}")).config
            assert config.max_bytes == bucket.max_bytes > 0
            assert config.discard == DiscardPolicy.NEW
        # A later declare with other bounds updates the existing assets.
        await declare(js, max_bytes={"SYNC": 8 << 20, "cm_jobs": 4 << 20})
        assert (await js.stream_info("SYNC")).config.max_bytes == 8 << 20
        assert (await js.stream_info("KV_cm_jobs")).config.max_bytes == 4 << 20
    finally:
        await nc.drain()


async def test_a_full_work_stream_refuses_a_publish_and_keeps_what_it_accepted(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats").start()
    nc, js = await connect(NatsSettings(url=server.url), name="limits")
    try:
        await declare(js, max_bytes={DISCOVER.stream: 4096})
        task = task_pb2.DeadLetter(reason="x" * 400)
        accepted = 0
        with pytest.raises(StreamFullError) as full:
            for i in range(100):
                await publish_task(js, DISCOVER.subject, task, msg_id=f"t{i}", deadline_s=5)
                accepted += 1
        message = str(full.value)
        assert DISCOVER.subject in message and "full" in message
        assert "CONTEXTMESH_JS_MAX_BYTES" in message
        assert 0 < accepted < 100
        assert (await js.stream_info(DISCOVER.stream)).state.messages == accepted
    finally:
        await nc.drain()
        server.stop()


def test_byte_bounds_are_read_from_the_environment() -> None:
    settings = Settings.from_env({"CONTEXTMESH_JS_MAX_BYTES": "SYNC=2GiB, cm_outcomes=512MiB"})
    assert settings.nats.max_bytes == {"SYNC": 2 << 30, "cm_outcomes": 512 << 20}
    with pytest.raises(ConfigError, match=r"CONTEXTMESH_JS_MAX_BYTES.*NAME=BYTES"):
        Settings.from_env({"CONTEXTMESH_JS_MAX_BYTES": "SYNC=lots"})
