"""Declaring streams, consumers and buckets is idempotent, and matches the documented values."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType

from meshkit.topology import ALL_BUCKETS, ALL_WORK_STREAMS, DEADLETTER, declare


async def test_declare_twice_is_harmless_and_sets_what_docs_say(js: JetStreamContext) -> None:
    await declare(js)
    await declare(js)
    for ws in ALL_WORK_STREAMS:
        info = await js.stream_info(ws.stream)
        assert info.config.subjects == [ws.subject]
        assert info.config.retention == RetentionPolicy.WORK_QUEUE
        assert info.config.storage == StorageType.FILE
        assert info.config.duplicate_window == ws.duplicate_window_s
        consumer = await js.consumer_info(ws.stream, ws.consumer)
        assert consumer.config.max_deliver == ws.max_deliver == len(ws.retry_backoff_s) + 1
        assert consumer.config.ack_wait == ws.ack_wait_s
        # No server-side BackOff: it would replace the ack wait (WorkStream's docstring).
        assert not consumer.config.backoff
    assert (await js.stream_info(DEADLETTER)).config.retention == RetentionPolicy.LIMITS
    for bucket in ALL_BUCKETS:
        status = await (await js.key_value(bucket.name)).status()
        assert status.bucket == bucket.name
        assert (await js.stream_info(f"KV_{bucket.name}")).config.allow_direct
