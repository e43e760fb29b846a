"""The shared pieces under the cloud backends: the retry loop, the fault tables, the parts."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from meshkit.blob.parts import PartReader
from meshkit.blob.retry import ErrorModel, Fault, call
from meshkit.errors import BlobError, BlobExistsError, BlobNotFoundError, BlobUnavailableError
from meshkit.retry import BLOB_CALL
from tests.blob.stores import CLOUD, StoreSpec, build_store
from tests.support.emulators import AZURITE_KEY

FAST = dataclasses.replace(
    BLOB_CALL, attempts=4, base_delay_s=0.001, max_delay_s=0.01, attempt_timeout_s=0.5
)


class Boom(Exception):
    def __init__(self, fault: Fault) -> None:
        super().__init__("https://account/blob?sig=hunter2-secret")
        self.fault = fault


ERRORS = ErrorModel(
    classify=lambda exc: exc.fault if isinstance(exc, Boom) else Fault.OTHER,
    describe=lambda exc: f"Boom {exc.fault.value}" if isinstance(exc, Boom) else "other",
)


def failing(*faults: Fault) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls: list[int] = []

    async def op() -> str:
        calls.append(1)
        if len(calls) <= len(faults):
            raise Boom(faults[len(calls) - 1])
        return "ok"

    return calls, op


async def test_transient_faults_are_retried() -> None:
    calls, op = failing(Fault.TRANSIENT, Fault.TRANSIENT)
    assert await call(op, policy=FAST, errors=ERRORS, what="w", key="k") == "ok"
    assert len(calls) == 3


async def test_persistent_transient_faults_become_unavailable() -> None:
    calls, op = failing(*[Fault.TRANSIENT] * 10)
    with pytest.raises(BlobUnavailableError) as raised:
        await call(op, policy=FAST, errors=ERRORS, what="s3 put 'k'", key="k")
    assert len(calls) == FAST.attempts
    assert "s3 put 'k'" in str(raised.value) and "4 attempts" in str(raised.value)
    assert "hunter2" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


async def test_each_attempt_has_a_timeout() -> None:
    attempts = 0

    async def hangs() -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(10)

    policy = dataclasses.replace(FAST, attempts=2, attempt_timeout_s=0.05)
    with pytest.raises(BlobUnavailableError, match=r"no answer within 0\.05 s"):
        await call(hangs, policy=policy, errors=ERRORS, what="w", key="k")
    assert attempts == 2


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.NOT_FOUND, BlobNotFoundError),
        (Fault.CONFLICT, BlobExistsError),
        (Fault.OTHER, BlobError),
    ],
)
async def test_permanent_faults_are_translated_at_once(
    fault: Fault, error: type[BlobError]
) -> None:
    calls, op = failing(fault)
    with pytest.raises(error) as raised:
        await call(op, policy=FAST, errors=ERRORS, what="w", key="k", conflict=BlobExistsError)
    assert len(calls) == 1
    assert "hunter2" not in str(raised.value)


def test_sdk_faults_are_classified() -> None:
    from azure.core.exceptions import HttpResponseError, ServiceRequestError
    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
    from google.api_core import exceptions as google

    from meshkit.blob import azure, gcs, s3

    def s3_error(code: str, status: int) -> ClientError:
        return ClientError(
            {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
        )

    assert s3._classify(s3_error("SlowDown", 503)) is Fault.TRANSIENT
    assert s3._classify(s3_error("InternalError", 500)) is Fault.TRANSIENT
    assert s3._classify(s3_error("ConditionalRequestConflict", 409)) is Fault.TRANSIENT
    assert s3._classify(s3_error("NoSuchKey", 404)) is Fault.NOT_FOUND
    assert s3._classify(s3_error("PreconditionFailed", 412)) is Fault.CONFLICT
    assert s3._classify(s3_error("AccessDenied", 403)) is Fault.OTHER
    assert s3._classify(EndpointConnectionError(endpoint_url="http://x")) is Fault.TRANSIENT
    assert s3._classify(ReadTimeoutError(endpoint_url="http://x")) is Fault.TRANSIENT

    assert gcs._classify(google.ServiceUnavailable("x")) is Fault.TRANSIENT
    assert gcs._classify(google.TooManyRequests("x")) is Fault.TRANSIENT
    assert gcs._classify(google.NotFound("x")) is Fault.NOT_FOUND
    assert gcs._classify(google.PreconditionFailed("x")) is Fault.CONFLICT
    assert gcs._classify(google.Forbidden("x")) is Fault.OTHER
    assert gcs._classify(ConnectionResetError()) is Fault.TRANSIENT
    from google.cloud.storage.exceptions import InvalidResponse

    class Response:
        def __init__(self, status_code: int) -> None:
            self.status_code = status_code

    # What a resumable upload raises: by status, not by class.
    assert gcs._classify(InvalidResponse(Response(503), "x")) is Fault.TRANSIENT
    assert gcs._classify(InvalidResponse(Response(412), "x")) is Fault.CONFLICT
    assert gcs._classify(InvalidResponse(Response(403), "x")) is Fault.OTHER

    def azure_error(status: int, code: str) -> HttpResponseError:
        error = HttpResponseError(message="x")
        error.status_code = status
        error.error_code = code  # type: ignore[attr-defined]
        return error

    assert azure._classify(azure_error(503, "ServerBusy")) is Fault.TRANSIENT
    assert azure._classify(azure_error(404, "BlobNotFound")) is Fault.NOT_FOUND
    assert azure._classify(azure_error(404, "ContainerNotFound")) is Fault.OTHER
    assert azure._classify(azure_error(409, "BlobAlreadyExists")) is Fault.CONFLICT
    assert azure._classify(azure_error(412, "ConditionNotMet")) is Fault.CONFLICT
    assert azure._classify(ServiceRequestError("refused")) is Fault.TRANSIENT


async def parts_of(data: bytes | AsyncIterator[bytes], size: int) -> list[bytes]:
    reader = PartReader(data, size)
    parts = []
    while part := await reader.read():
        parts.append(part)
    assert await reader.at_end()
    assert reader.total == sum(map(len, parts))
    return parts


async def test_parts_have_the_exact_size() -> None:
    data = bytes(range(256)) * 40  # 10240 bytes

    async def odd_chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 777):
            yield data[start : start + 777]
            yield b""  # empty chunks are harmless

    for source in (data, odd_chunks()):
        parts = await parts_of(source, 4096)
        assert [len(part) for part in parts] == [4096, 4096, 2048]
        assert b"".join(parts) == data
    assert await parts_of(b"", 10) == []


async def test_at_end_tells_one_part_from_more() -> None:
    async def two_chunks() -> AsyncIterator[bytes]:
        yield b"a" * 10
        yield b"b" * 10

    reader = PartReader(two_chunks(), 10)
    assert await reader.read() == b"a" * 10
    assert not await reader.at_end()
    assert await reader.read() == b"b" * 10
    assert await reader.at_end()


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("backend", CLOUD)
async def test_unreachable_store_is_unavailable_without_secrets(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = f"http://127.0.0.1:{_dead_port()}"
    env = {
        "azure": {
            "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=http;"
            f"AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={endpoint}/devstoreaccount1;"
        },
        "gcs": {"STORAGE_EMULATOR_HOST": endpoint},
        "s3": {
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "id",
            "AWS_SECRET_ACCESS_KEY": "hunter2-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    }[backend]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    async with build_store(StoreSpec(backend, prefix="p")) as store:
        for attempt in (store.put("k", b"x"), store.get("k"), store.exists("k")):
            with pytest.raises(BlobUnavailableError) as raised:
                await attempt
            message = str(raised.value)
            assert "3 attempts" in message
            assert AZURITE_KEY not in message and "hunter2" not in message
