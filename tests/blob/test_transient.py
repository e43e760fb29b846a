"""Transient server errors are retried by every cloud backend, on the real SDKs: a relay in
front of each emulator answers 503 to every other request, and every call still succeeds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from meshkit.blob import BlobInfo
from meshkit.errors import BlobExistsError, BlobNotFoundError
from tests.blob.flaky_proxy import FlakyProxy
from tests.blob.stores import CLOUD, StoreSpec, build_store
from tests.support.emulators import AZURITE_ACCOUNT, Emulator

MiB = 1024 * 1024


def pointed_at(emulator: Emulator, endpoint: str) -> dict[str, str]:
    """The emulator's client environment, with the endpoint replaced by the relay's."""
    if emulator.kind == "azure":
        connection = emulator.env["AZURE_STORAGE_CONNECTION_STRING"].replace(
            f"BlobEndpoint={emulator.endpoint}/", f"BlobEndpoint={endpoint}/"
        )
        assert f"{endpoint}/{AZURITE_ACCOUNT}" in connection
        return {**emulator.env, "AZURE_STORAGE_CONNECTION_STRING": connection}
    if emulator.kind == "gcs":
        return {**emulator.env, "STORAGE_EMULATOR_HOST": endpoint}
    return {**emulator.env, "AWS_ENDPOINT_URL_S3": endpoint}


@pytest.mark.parametrize("backend", CLOUD, indirect=True)
async def test_every_call_survives_503s(
    spec: StoreSpec, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator: Emulator = request.getfixturevalue(
        {"azure": "azurite", "gcs": "fake_gcs", "s3": "moto_s3"}[spec.backend]
    )
    big = bytes(range(256)) * (6 * MiB // 256)

    async def streamed() -> AsyncIterator[bytes]:
        for start in range(0, len(big), MiB):
            yield big[start : start + MiB]
            await asyncio.sleep(0)

    with FlakyProxy(emulator.endpoint) as proxy:
        for name, value in pointed_at(emulator, proxy.endpoint).items():
            monkeypatch.setenv(name, value)
        async with build_store(spec) as store:
            await store.put("a", b"alpha")
            await store.create("b", b"beta")
            with pytest.raises(BlobExistsError):
                await store.create("b", b"again")
            assert await store.get("a") == b"alpha"
            assert await store.exists("b")
            await store.put("big", streamed())
            assert b"".join([c async for c in store.open_read("big", MiB)]) == big
            assert [info async for info in store.list()] == [
                BlobInfo("a", 5),
                BlobInfo("b", 4),
                BlobInfo("big", len(big)),
            ]
            await store.delete("a")
            with pytest.raises(BlobNotFoundError):
                await store.get("a")
        assert proxy.failures >= 5
