"""TRAIN's retry timing comes from the settings; defaults stay topology.TRAIN's."""

from __future__ import annotations

import pytest

from meshkit.config import NatsSettings, Settings
from meshkit.errors import ConfigError
from meshkit.nats_client import connect
from meshkit.nats_server import NatsServer
from meshkit.topology import TRAIN, declare, train_stream


def test_defaults_are_the_train_stream_itself() -> None:
    assert train_stream(Settings.from_env({}).train) == TRAIN


def test_backoff_and_ack_wait_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {"CONTEXTMESH_TRAIN_ACK_WAIT_S": "3", "CONTEXTMESH_TRAIN_RETRY_BACKOFF_S": "2, 5,9"}
    )
    stream = train_stream(settings.train)
    assert (stream.ack_wait_s, stream.backoff_s, stream.max_deliver) == (3.0, (2.0, 5.0, 9.0), 4)
    assert (stream.stream, stream.subject, stream.consumer) == (
        TRAIN.stream,
        TRAIN.subject,
        TRAIN.consumer,
    )


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        (
            {"CONTEXTMESH_TRAIN_RETRY_BACKOFF_S": "soon"},
            "CONTEXTMESH_TRAIN_RETRY_BACKOFF_S",
            "comma-separated numbers",
        ),
        ({"CONTEXTMESH_TRAIN_RETRY_BACKOFF_S": "0"}, "CONTEXTMESH_TRAIN_RETRY_BACKOFF_S", ">="),
        ({"CONTEXTMESH_TRAIN_ACK_WAIT_S": "0.5"}, "CONTEXTMESH_TRAIN_ACK_WAIT_S", ">= 1.0"),
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
        await declare(js, train=settings.train)
        info = await js.consumer_info(TRAIN.stream, TRAIN.consumer)
        assert list(info.config.backoff or []) == [1, 4] and info.config.max_deliver == 3
        # The server replaces ack_wait with the first delay when there is a backoff list:
        # why the worker's in-progress follows each delivery's own deadline.
        assert info.config.ack_wait == 1
    finally:
        await nc.drain()
