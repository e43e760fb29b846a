"""Fixtures for the blob store contract suite: one emulator per cloud backend for this
directory's tests.

Each emulator starts on a free loopback port the first time a test needs it (see
tests/support/emulators.py) and stops when the directory's last test has run. Every test
gets a store under its own random prefix, so tests never see each other's objects.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from meshkit.blob import BlobStore
from tests.blob.stores import BUCKET, StoreSpec, build_store
from tests.support.emulators import (
    Emulator,
    EmulatorMissingError,
    start_azurite,
    start_fake_gcs,
    start_moto_s3,
)

BACKENDS = ("fs", "azure", "gcs", "s3")


def _emulator(start: Callable[[Path], Emulator], workdir: Path) -> Iterator[Emulator]:
    try:
        emulator = start(workdir)
    except EmulatorMissingError as exc:
        pytest.fail(str(exc), pytrace=False)  # a missing emulator is a setup error, not a skip
    try:
        emulator.create_bucket(BUCKET)
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="package")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    yield from _emulator(start_azurite, tmp_path_factory.mktemp("azurite"))


@pytest.fixture(scope="package")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    yield from _emulator(start_fake_gcs, tmp_path_factory.mktemp("fake-gcs"))


@pytest.fixture(scope="package")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    yield from _emulator(start_moto_s3, tmp_path_factory.mktemp("moto-s3"))


_EMULATOR_FIXTURES = {"azure": "azurite", "gcs": "fake_gcs", "s3": "moto_s3"}


def make_spec(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> StoreSpec:
    """A fresh, empty store description for backend."""
    if backend == "fs":
        return StoreSpec("fs", root=str(tmp_path / "blobs"))
    emulator: Emulator = request.getfixturevalue(_EMULATOR_FIXTURES[backend])
    return StoreSpec(backend, prefix=f"t-{uuid.uuid4().hex[:12]}", env=emulator.env)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def spec(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> StoreSpec:
    return make_spec(request, backend, tmp_path)


@pytest.fixture
async def store(spec: StoreSpec, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BlobStore]:
    for name, value in spec.env.items():
        monkeypatch.setenv(name, value)
    blob_store = build_store(spec)
    try:
        yield blob_store
    finally:
        await blob_store.close()
