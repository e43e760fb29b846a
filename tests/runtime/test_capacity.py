"""The alert before a stream is full: an error line naming the stream, once it passes the
threshold, and a line when it is back under."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from contextmesh.task.v1 import task_pb2

from meshctl.nats_server import NatsServer
from meshkit import nats_auth
from meshkit.capacity import CapacityWatch, streams_of
from meshkit.config import NatsSettings
from meshkit.nats_client import connect
from meshkit.publish import publish_task
from meshkit.topology import DISCOVER, SYNC, declare


async def test_a_stream_past_the_threshold_is_named_until_it_drains(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = NatsServer(tmp_path / "nats").start()
    nc, js = await connect(NatsSettings(url=server.url), name="capacity")
    try:
        await declare(js, max_bytes={DISCOVER.stream: 8192})
        watch = CapacityWatch(js, [DISCOVER.stream, SYNC.stream], warn_at=0.5)
        assert await watch.check() == {}
        task = task_pb2.DeadLetter(reason="x" * 400)
        for i in range(6):  # about 3 KiB: under half of 8 KiB
            await publish_task(js, DISCOVER.subject, task, msg_id=f"a{i}")
        assert await watch.check() == {}
        for i in range(8):  # now past half
            await publish_task(js, DISCOVER.subject, task, msg_id=f"b{i}")
        with caplog.at_level(logging.INFO, logger="meshkit.capacity"):
            over = await watch.check()
            assert list(over) == [DISCOVER.stream] and 0.5 <= over[DISCOVER.stream] < 1
            alert = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert len(alert) == 1 and "DISCOVER is" in alert[0].getMessage()
            assert "CONTEXTMESH_JS_MAX_BYTES" in alert[0].getMessage()

            await js.purge_stream(DISCOVER.stream)
            caplog.clear()
            assert await watch.check() == {}
            assert [r.getMessage() for r in caplog.records] == [
                "stream DISCOVER is back under 50% full"
            ]
    finally:
        await nc.drain()
        server.stop()


def test_each_identity_watches_what_it_uses_and_an_open_server_everything() -> None:
    assert streams_of("syncsvc") == nats_auth.IDENTITIES["syncsvc"].streams
    assert "DEADLETTER" in streams_of(nats_auth.OPS)
    everything = streams_of(None)
    assert {"DISCOVER", "SYNC", "MERGE", "TRAIN", "DEADLETTER", "KV_cm_jobs"} <= set(everything)
