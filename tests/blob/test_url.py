"""CONTEXTMESH_BLOB_URL: each scheme opens its backend, and every mistake is a ConfigError
that names the variable and never repeats a secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from meshkit.blob import FilesystemBlobStore, open_blob_store
from meshkit.blob.measured import MeasuredBlobStore
from meshkit.errors import ConfigError
from tests.support.emulators import AZURITE_KEY, REPO_ROOT


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No cloud credentials at all, and no way to look for them on the network."""
    for name in (
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_ACCOUNT_URL",
        "STORAGE_EMULATOR_HOST",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    return monkeypatch


async def test_file_url(tmp_path: Path) -> None:
    store = open_blob_store(f"file://{tmp_path}/blobs")
    assert isinstance(store, MeasuredBlobStore)
    assert isinstance(store.inner, FilesystemBlobStore)
    await store.close()


async def test_cloud_urls_open_their_backends(clean_env: pytest.MonkeyPatch) -> None:
    from meshkit.blob.azure import AzureBlobStore
    from meshkit.blob.gcs import GCSBlobStore
    from meshkit.blob.s3 import S3BlobStore

    clean_env.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;",
    )
    clean_env.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    clean_env.setenv("AWS_ACCESS_KEY_ID", "id")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    for url, kind in (
        ("azure://container/some/prefix", AzureBlobStore),
        ("gs://bucket", GCSBlobStore),
        ("s3://bucket.with.dots/prefix/", S3BlobStore),
    ):
        store = open_blob_store(url)
        assert isinstance(store, MeasuredBlobStore)
        assert isinstance(store.inner, kind)
        await store.close()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "unsupported"),
        ("ftp://host/x", "unsupported"),
        ("file://", "no local path"),
        ("file://otherhost/x", "no local path"),
        ("s3://", "bucket"),
        ("s3://Upper", "bucket"),
        ("gs://a", "bucket"),
        ("azure://under_score", "bucket"),
        ("s3://bucket/../up", "bad prefix"),
        ("gs://bucket/a//b", "bad prefix"),
        ("s3://bucket:9000/x", "bucket"),
    ],
)
def test_bad_urls(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        open_blob_store(url)
    assert raised.value.variable == "CONTEXTMESH_BLOB_URL"
    assert str(raised.value).startswith("CONTEXTMESH_BLOB_URL: ")
    assert says in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIAEXAMPLE:hunter2-secret@bucket/x",
        "azure://container?sig=hunter2-secret",
        "gs://bucket#hunter2-secret",
    ],
)
def test_credentials_in_the_url_are_refused_unrepeated(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        open_blob_store(url)
    assert "hunter2-secret" not in str(raised.value)
    assert "CONTEXTMESH_BLOB_URL" in str(raised.value)


def test_variable_name_is_reported(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^MY_BLOBS: "):
        open_blob_store("nope://x", variable="MY_BLOBS")


def test_missing_credentials_name_their_variables(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as azure:
        open_blob_store("azure://container")
    assert azure.value.variable == "AZURE_STORAGE_CONNECTION_STRING"
    assert "AZURE_STORAGE_ACCOUNT_URL" in str(azure.value)
    with pytest.raises(ConfigError) as gcs:
        open_blob_store("gs://bucket")
    assert gcs.value.variable == "GOOGLE_APPLICATION_CREDENTIALS"
    with pytest.raises(ConfigError) as s3:
        open_blob_store("s3://bucket")
    assert s3.value.variable == "AWS_ACCESS_KEY_ID"


def test_malformed_connection_string_is_not_echoed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountKey=hunter2-secret;garbage")
    with pytest.raises(ConfigError) as raised:
        open_blob_store("azure://container")
    assert raised.value.variable == "AZURE_STORAGE_CONNECTION_STRING"
    assert "hunter2-secret" not in str(raised.value)


def test_filesystem_processes_never_import_cloud_sdks(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from meshkit.blob import open_blob_store\n"
        f"open_blob_store('file://{tmp_path}/blobs')\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('azure', 'boto3', 'botocore')"
        " or m.startswith('google.cloud')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=True, timeout=60)
