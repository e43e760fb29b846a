"""The Azure Blob Storage store, on the asyncio client of azure-storage-blob.

An object that fits in one block goes up as one Put Blob; a larger one as staged blocks,
one block in memory at a time, committed by one Put Block List. Staged blocks are invisible
until the commit, so a writer that dies leaves nothing readable (Azure drops uncommitted
blocks after a week). `create` sends `If-None-Match: *` on the Put Blob or on the commit, so
concurrent creators produce one winner. Block ids carry a per-write random prefix, so two
writers staging blocks for one name never use each other's blocks.

Reads fetch ranges pinned to the ETag seen first, so a long read never mixes two versions,
and a read that fails half way resumes from where it stopped.

Transport: the SDK's default asyncio transport needs aiohttp, which this project does not
depend on; azure-core's AsyncioRequestsTransport runs `requests` (already present through
the Google SDK) on the loop's executor instead. Azure caveat: committing a block list drops
every other uncommitted block of that name, so of two concurrent streamed `put`s to one key
the later one fails (BlobError, InvalidBlockList) rather than replacing; `create` is unharmed
(the loser gets BlobExistsError), and content-addressed keys make concurrent puts rare.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from meshkit.blob.base import CHUNK_SIZE, BlobInfo, Data
from meshkit.blob.cloud import CloudBlobStore, Names, Page
from meshkit.blob.keys import KeySpace
from meshkit.blob.parts import PartReader
from meshkit.blob.retry import ErrorModel, Fault, SocketTimeouts, call
from meshkit.errors import BlobError, BlobExistsError, BlobNotFoundError, ConfigError
from meshkit.retry import BLOB_CALL, RetryPolicy

# A list page, taken outside the classes, whose list() method shadows the builtin there.

__all__ = ["AzureBlobStore"]

T = TypeVar("T")

DEFAULT_BLOCK_SIZE = 8 * 1024 * 1024
DEFAULT_READ_WINDOW = 8 * 1024 * 1024
_RESPONSE_BLOCK = 256 * 1024
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class AzureBlobStore(CloudBlobStore):
    """Blobs as block blobs in one Azure container, under an optional name prefix."""

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        service: Any,
        credential: Any = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        read_window: int = DEFAULT_READ_WINDOW,
        page_size: int = 1000,
        retry: RetryPolicy = BLOB_CALL,
    ) -> None:
        """`service` is an azure.storage.blob.aio.BlobServiceClient; `credential` is closed
        with the store when given. The transport's SocketTimeouts are the service's own."""
        self._service = service
        self._credential = credential
        self._container = service.get_container_client(container)
        self._keys = KeySpace(prefix)
        self._block_size = block_size
        self._read_window = read_window
        self._page_size = page_size
        self._retry = retry
        # Azure's server-side timeout, in whole seconds, on every request.
        bound = retry.attempt_timeout_s
        self._timeout = None if bound is None else max(1, int(bound))

    @classmethod
    def from_env(
        cls,
        container: str,
        prefix: str = "",
        *,
        timeouts: SocketTimeouts | None = None,
        **options: Any,
    ) -> AzureBlobStore:
        """A store on AZURE_STORAGE_CONNECTION_STRING, or on AZURE_STORAGE_ACCOUNT_URL with
        DefaultAzureCredential (environment, workload or managed identity, Azure CLI)."""
        from azure.storage.blob.aio import BlobServiceClient

        timeouts = timeouts or SocketTimeouts()
        client_options = _client_options(timeouts)
        connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        account_url = os.environ.get("AZURE_STORAGE_ACCOUNT_URL")
        if connection_string:
            try:
                service = BlobServiceClient.from_connection_string(
                    connection_string, **client_options
                )
            except ValueError:
                # The SDK's message may quote the string, which holds the account key.
                raise ConfigError(
                    "AZURE_STORAGE_CONNECTION_STRING", "malformed connection string"
                ) from None
            return cls(container, prefix, service=service, **options)
        if account_url:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential(transport=_transport(timeouts))
            service = BlobServiceClient(account_url, credential=credential, **client_options)
            return cls(container, prefix, service=service, credential=credential, **options)
        raise ConfigError(
            "AZURE_STORAGE_CONNECTION_STRING",
            "an azure:// blob store needs AZURE_STORAGE_CONNECTION_STRING, or "
            "AZURE_STORAGE_ACCOUNT_URL with credentials DefaultAzureCredential can find",
        )

    async def _call(
        self,
        what: str,
        key: str,
        op: Callable[[], Awaitable[T]],
        conflict: Callable[[str], BlobError] | None = None,
    ) -> T:
        return await call(
            op,
            policy=self._retry,
            errors=_ERRORS,
            what=f"azure {what} {key!r}",
            key=key,
            conflict=conflict,
        )

    async def _write(self, key: str, data: Data, *, create: bool) -> BlobInfo:
        from azure.core import MatchConditions

        blob = self._container.get_blob_client(self._keys.name(key))
        condition: dict[str, Any] = {"match_condition": MatchConditions.IfMissing} if create else {}
        conflict = BlobExistsError if create else None
        parts = PartReader(data, self._block_size)
        first = await parts.read()
        if await parts.at_end():
            upload = functools.partial(
                blob.upload_blob,
                first,
                length=len(first),
                overwrite=not create,
                timeout=self._timeout,
                **condition,
            )
            await self._call("upload", key, upload, conflict)
            return BlobInfo(key, parts.total)
        writer = uuid.uuid4().hex
        blocks: list[str] = []
        part, first = first, b""  # hold one part at a time, not the first all along
        while part:
            block_id = base64.b64encode(f"{writer}-{len(blocks):08d}".encode()).decode()
            stage = functools.partial(
                blob.stage_block, block_id, part, length=len(part), timeout=self._timeout
            )
            await self._call(f"stage block {len(blocks)}", key, stage)
            del stage  # it holds the part
            blocks.append(block_id)
            part = b""  # drop the sent part before the next one is buffered
            part = await parts.read()
        commit = functools.partial(
            blob.commit_block_list, blocks, timeout=self._timeout, **condition
        )
        await self._call("commit", key, commit, conflict)
        return BlobInfo(key, parts.total)

    async def get(self, key: str) -> bytes:
        blob = self._container.get_blob_client(self._keys.name(key))

        async def download() -> bytes:
            stream = await blob.download_blob(timeout=self._timeout)
            return bytes(await stream.readall())

        return await self._call("download", key, download)

    async def open_read(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        from azure.core import MatchConditions

        blob = self._container.get_blob_client(self._keys.name(key))
        props = await self._call(
            "stat", key, functools.partial(blob.get_blob_properties, timeout=self._timeout)
        )
        size, etag = int(props.size), props.etag
        window = max(chunk_size, self._read_window)
        offset = 0

        async def read_range(start: int, length: int) -> bytes:
            stream = await blob.download_blob(
                offset=start,
                length=length,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
                timeout=self._timeout,
            )
            return bytes(await stream.readall())

        while offset < size:
            length = min(window, size - offset)
            try:
                data = await self._call(
                    "read", key, functools.partial(read_range, offset, length), _changed
                )
            except BlobNotFoundError:
                raise _changed(key) from None
            if not data:
                raise BlobError(f"azure read {key!r}: the object ended early")
            offset += len(data)
            view = memoryview(data)
            for start in range(0, len(view), chunk_size):
                yield bytes(view[start : start + chunk_size])

    async def exists(self, key: str) -> bool:
        blob = self._container.get_blob_client(self._keys.name(key))
        return bool(
            await self._call("stat", key, functools.partial(blob.exists, timeout=self._timeout))
        )

    async def _list_page(self, prefix: str, wanted: str, token: str | None) -> Page:
        return await self._call("list", prefix, functools.partial(self._fetch_page, wanted, token))

    async def _fetch_page(self, prefix: str, token: str | None) -> Page:
        # One page per call, restarted from its token, so that a retry repeats only a page.
        pages = self._container.list_blobs(
            name_starts_with=prefix, results_per_page=self._page_size, timeout=self._timeout
        ).by_page(continuation_token=token)
        page = await anext(pages, None)
        if page is None:
            return [], None
        names: Names = [(item.name, int(item.size or 0)) async for item in page]
        return names, pages.continuation_token

    async def delete(self, key: str) -> None:
        blob = self._container.get_blob_client(self._keys.name(key))
        delete = functools.partial(
            blob.delete_blob, delete_snapshots="include", timeout=self._timeout
        )
        with contextlib.suppress(BlobNotFoundError):
            await self._call("delete", key, delete)

    async def close(self) -> None:
        await self._service.close()
        if self._credential is not None:
            await self._credential.close()


def _changed(key: str) -> BlobError:
    return BlobError(f"azure read {key!r}: the object changed while it was being read")


def _transport(timeouts: SocketTimeouts) -> Any:
    from azure.core.pipeline.transport import AsyncioRequestsTransport

    return AsyncioRequestsTransport(
        connection_timeout=timeouts.connect_s,
        read_timeout=timeouts.read_s,
        # Each block of a response body is one hop to a thread: 4 KiB (the default) made
        # downloads ten times slower than uploads.
        connection_data_block_size=_RESPONSE_BLOCK,
    )


def _client_options(timeouts: SocketTimeouts) -> dict[str, Any]:
    return {
        "transport": _transport(timeouts),
        # meshkit.blob.retry retries; the SDK's own retries would multiply the attempts.
        "retry_total": 0,
    }


def _classify(exc: BaseException) -> Fault:
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, ServiceRequestError | ServiceResponseError | ConnectionError):
        return Fault.TRANSIENT
    if not isinstance(exc, HttpResponseError):
        return Fault.OTHER
    status, code = exc.status_code or 0, _code(exc)
    if status in _TRANSIENT_STATUS or status >= 500:
        return Fault.TRANSIENT
    if status == 404 and code in ("BlobNotFound", ""):
        return Fault.NOT_FOUND
    if status == 412 or code == "BlobAlreadyExists":
        return Fault.CONFLICT
    return Fault.OTHER


def _describe(exc: BaseException) -> str:
    from azure.core.exceptions import HttpResponseError

    if isinstance(exc, HttpResponseError):
        return f"{_code(exc) or type(exc).__name__} (HTTP {exc.status_code})"
    return type(exc).__name__


def _code(exc: Any) -> str:
    # error_code is a plain string or a StorageErrorCode enum, depending on the call.
    code = exc.error_code or ""
    return str(getattr(code, "value", code))


_ERRORS = ErrorModel(classify=_classify, describe=_describe)
