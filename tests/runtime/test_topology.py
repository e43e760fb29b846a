"""Declaring streams, consumers and buckets is idempotent, and matches the documented values."""

from __future__ import annotations

from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, RetentionPolicy, StorageType
from nats.js.errors import ServiceUnavailableError

from meshctl.nats_server import NatsServer
from meshkit import topology
from meshkit.config import NatsSettings, Settings
from meshkit.nats_client import connect
from meshkit.topology import ALL_BUCKETS, ALL_WORK_STREAMS, DAY, DEADLETTER, Buckets, declare


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
        info = await js.stream_info(f"KV_{bucket.name}")
        assert info.config.allow_direct
        assert (info.config.max_age or 0) == bucket.ttl_s


async def test_an_old_cm_active_without_expiry_gets_one(fresh_nats: NatsServer) -> None:
    """cm_active was created without a TTL before; declaring again gives it its expiry,
    so the entries of refreshes for names nobody has do not stay forever."""
    nc, js = await connect(NatsSettings(url=fresh_nats.url), name="topology-test")
    try:
        await js.create_key_value(KeyValueConfig(bucket=Buckets.ACTIVE.name, history=1))
        kv = await js.key_value(Buckets.ACTIVE.name)
        await kv.put("someone", b"01ARZ3NDEKTSV4RRFFQ69G5FAV")
        assert not (await js.stream_info(f"KV_{Buckets.ACTIVE.name}")).config.max_age
        await declare(js)
        info = await js.stream_info(f"KV_{Buckets.ACTIVE.name}")
        assert info.config.max_age == Buckets.ACTIVE.ttl_s == DAY
        assert (await kv.get("someone")).value  # entries are kept, and now expire
    finally:
        await nc.close()


async def test_a_cluster_still_electing_its_leaders_is_declared_once_it_answers(
    js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh R3 cluster answers add_stream with timeouts and 503s until its leaders settle;
    # a service starting then must wait for it, not exit.
    real_declare = topology.declare
    failures = [NatsTimeoutError(), ServiceUnavailableError()]

    async def settling(js: JetStreamContext, **kwargs: Any) -> None:
        if failures:
            raise failures.pop(0)
        await real_declare(js, **kwargs)

    monkeypatch.setattr(topology, "declare", settling)
    await topology.declare_as_configured(js, Settings.from_env({}))

    assert failures == []
    assert (await js.stream_info(DEADLETTER)).config.name == DEADLETTER
