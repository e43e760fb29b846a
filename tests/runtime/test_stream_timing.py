"""Each work stream's timing comes from the settings; unset values keep topology's defaults."""

from __future__ import annotations

import pytest

from meshctl.nats_server import NatsServer
from meshkit.config import WORK_STREAMS, NatsSettings, Settings
from meshkit.errors import ConfigError
from meshkit.nats_client import connect
from meshkit.topology import ALL_WORK_STREAMS, SYNC, TRAIN, declare, work_stream


def test_every_work_stream_can_be_tuned() -> None:
    assert {ws.stream for ws in ALL_WORK_STREAMS} == set(WORK_STREAMS)


def test_defaults_are_the_streams_themselves() -> None:
    settings = Settings.from_env({})
    for ws in ALL_WORK_STREAMS:
        assert work_stream(ws, settings.timing) == ws


def test_timing_comes_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "CONTEXTMESH_TRAIN_ACK_WAIT_S": "3",
            "CONTEXTMESH_TRAIN_RETRY_BACKOFF_S": "2, 5,9",
            "CONTEXTMESH_TRAIN_DEADLINE_S": "600",
            "CONTEXTMESH_SYNC_DEADLINE_S": "30",
        }
    )
    train = work_stream(TRAIN, settings.timing)
    assert (train.ack_wait_s, train.retry_backoff_s, train.max_deliver, train.deadline_s) == (
        3.0,
        (2.0, 5.0, 9.0),
        4,
        600.0,
    )
    assert (train.stream, train.subject, train.consumer) == (
        TRAIN.stream,
        TRAIN.subject,
        TRAIN.consumer,
    )
    sync = work_stream(SYNC, settings.timing)
    assert sync.deadline_s == 30.0
    assert (sync.ack_wait_s, sync.retry_backoff_s) == (SYNC.ack_wait_s, SYNC.retry_backoff_s)


def test_retry_delay_after_each_attempt_follows_the_table() -> None:
    assert [SYNC.retry_delay(n) for n in range(1, SYNC.max_deliver)] == list(SYNC.retry_backoff_s)


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        (
            {"CONTEXTMESH_TRAIN_RETRY_BACKOFF_S": "soon"},
            "CONTEXTMESH_TRAIN_RETRY_BACKOFF_S",
            "comma-separated numbers",
        ),
        ({"CONTEXTMESH_SYNC_RETRY_BACKOFF_S": "0"}, "CONTEXTMESH_SYNC_RETRY_BACKOFF_S", ">="),
        ({"CONTEXTMESH_TRAIN_ACK_WAIT_S": "0.1"}, "CONTEXTMESH_TRAIN_ACK_WAIT_S", ">= 0.5"),
        ({"CONTEXTMESH_MERGE_DEADLINE_S": "-1"}, "CONTEXTMESH_MERGE_DEADLINE_S", ">= 0.1"),
    ],
)
def test_bad_values_name_their_variable(env: dict[str, str], variable: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable and says in str(info.value)


async def test_declare_configures_the_consumer_from_the_settings(fresh_nats: NatsServer) -> None:
    settings = Settings.from_env(
        {"CONTEXTMESH_TRAIN_ACK_WAIT_S": "2", "CONTEXTMESH_TRAIN_RETRY_BACKOFF_S": "1,4"}
    )
    nc, js = await connect(NatsSettings(url=fresh_nats.url), name="settings-test")
    try:
        await declare(js)  # the defaults first, as an earlier deployment left them
        await declare(js, timing=settings.timing)
        info = await js.consumer_info(TRAIN.stream, TRAIN.consumer)
        # The ack wait is the ack wait: no BackOff list for the server to put in its place.
        assert info.config.ack_wait == 2 and not info.config.backoff
        assert info.config.max_deliver == 3
    finally:
        await nc.drain()
