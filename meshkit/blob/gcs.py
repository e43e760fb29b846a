"""The Google Cloud Storage blob store, on google-cloud-storage calls run in threads.

google-cloud-storage blocks, so every call runs on the store's private thread pool, never on
the event loop. An object that fits in one chunk goes up in one multipart request; a larger
one as a resumable upload, one chunk in memory at a time, and appears only when the upload is
finalised. `create` sends `ifGenerationMatch=0` on either kind: GCS then writes the object
only if no live object has that name, so concurrent creators produce one winner.

Reads fetch ranges of one generation, so a long read never mixes two versions, and a read
that fails half way resumes from where it stopped.

Emulator caveat (docs/storage.md): fake-gcs-server honours `ifGenerationMatch` on single
request uploads only, so the emulator cannot prove the resumable path's precondition.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from meshkit.blob.base import CHUNK_SIZE, BlobInfo, Data
from meshkit.blob.cloud import CloudBlobStore, Page
from meshkit.blob.keys import KeySpace
from meshkit.blob.parts import PartReader
from meshkit.blob.retry import ErrorModel, Fault, SocketTimeouts, call
from meshkit.blob.threads import BlockingCalls
from meshkit.errors import BlobError, BlobExistsError, BlobNotFoundError, ConfigError
from meshkit.retry import BLOB_CALL, RetryPolicy

# A list page, taken outside the classes, whose list() method shadows the builtin there.

__all__ = ["GCSBlobStore"]

UPLOAD_QUANTUM = 256 * 1024  # resumable chunks must be multiples of this
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024  # also the most the SDK sends as one multipart request
DEFAULT_READ_WINDOW = 8 * 1024 * 1024


class GCSBlobStore(CloudBlobStore):
    """Blobs as objects in one GCS bucket, under an optional name prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        read_window: int = DEFAULT_READ_WINDOW,
        page_size: int = 1000,
        retry: RetryPolicy = BLOB_CALL,
        timeouts: SocketTimeouts | None = None,
        max_workers: int = 8,
    ) -> None:
        if chunk_size % UPLOAD_QUANTUM or not 0 < chunk_size <= DEFAULT_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be a multiple of {UPLOAD_QUANTUM}, at most 8 MiB")
        self._client = client
        self._bucket = client.bucket(bucket)
        self._keys = KeySpace(prefix)
        self._chunk_size = chunk_size
        self._read_window = read_window
        self._page_size = page_size
        self._retry = retry
        sockets = timeouts or SocketTimeouts()
        self._timeout = (sockets.connect_s, sockets.read_s)
        self._threads = BlockingCalls("gcs", max_workers)

    @classmethod
    def from_env(cls, bucket: str, prefix: str = "", **options: Any) -> GCSBlobStore:
        """A store on application default credentials, or on STORAGE_EMULATOR_HOST."""
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage

        project = os.environ.get("GOOGLE_CLOUD_PROJECT")
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            client = storage.Client(
                project=project or "contextmesh-emulator", credentials=AnonymousCredentials()
            )
        else:
            try:
                client = storage.Client(project=project)
            except DefaultCredentialsError:
                raise ConfigError(
                    "GOOGLE_APPLICATION_CREDENTIALS",
                    "no Google application default credentials: set "
                    "GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default "
                    "login`, or run with a service account (or set STORAGE_EMULATOR_HOST)",
                ) from None
        return cls(bucket, prefix, client=client, **options)

    async def _call(
        self,
        what: str,
        key: str,
        fn: Callable[..., Any],
        *args: Any,
        conflict: Callable[[str], BlobError] | None = None,
        **kwargs: Any,
    ) -> Any:
        # retry=None: the SDK's own retries would multiply meshkit.blob.retry's attempts.
        return await call(
            lambda: self._threads.run(fn, *args, timeout=self._timeout, retry=None, **kwargs),
            policy=self._retry,
            errors=_ERRORS,
            what=f"gcs {what} {key!r}",
            key=key,
            conflict=conflict,
        )

    async def _write(self, key: str, data: Data, *, create: bool) -> BlobInfo:
        blob = self._bucket.blob(self._keys.name(key))
        condition = {"if_generation_match": 0} if create else {}
        conflict = BlobExistsError if create else None
        parts = PartReader(data, self._chunk_size)
        first = await parts.read()
        if await parts.at_end():
            await self._call(
                "upload", key, blob.upload_from_string, first, conflict=conflict, **condition
            )
            return BlobInfo(key, parts.total)
        # The resumable protocol's recovery (ask the server what it has, resend the rest) is
        # inside the SDK, so this one path lets the SDK retry each chunk, with our policy.
        writer = await self._threads.run(
            blob.open,
            "wb",
            chunk_size=self._chunk_size,
            timeout=self._timeout,
            retry=_sdk_retry(self._retry),
            **condition,
        )
        try:
            part, first = first, b""  # hold one part at a time, not the first all along
            while part:
                await self._upload_step(key, writer.write, part, conflict)
                part = b""  # drop the sent part before the next one is buffered
                part = await parts.read()
            await self._upload_step(key, writer.close, None, conflict)
        except BaseException:
            await self._threads.run(_abandon, writer)
            raise
        return BlobInfo(key, parts.total)

    async def _upload_step(
        self,
        key: str,
        step: Callable[..., Any],
        part: bytes | None,
        conflict: Callable[[str], BlobError] | None,
    ) -> None:
        # The SDK retries the step inside (see _write): bound it as a whole, try it once here.
        budget = _budget_s(self._retry)
        once = dataclasses.replace(self._retry, attempts=1, attempt_timeout_s=budget)
        await call(
            lambda: self._threads.run(step) if part is None else self._threads.run(step, part),
            policy=once,
            errors=_ERRORS,
            what=f"gcs resumable upload {key!r}",
            key=key,
            conflict=conflict,
        )

    async def get(self, key: str) -> bytes:
        blob = self._bucket.blob(self._keys.name(key))
        data = await self._call("download", key, blob.download_as_bytes)
        return bytes(data)

    async def open_read(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        name = self._keys.name(key)
        found = await self._call("stat", key, self._bucket.get_blob, name)
        if found is None:
            raise BlobNotFoundError(key)
        # Pin the generation: every range then comes from the object as it was at the start.
        pinned = self._bucket.blob(name, generation=found.generation)
        size = int(found.size or 0)
        window = max(chunk_size, self._read_window)
        offset = 0
        while offset < size:
            end = min(offset + window, size) - 1
            try:
                data = await self._call(
                    "read", key, pinned.download_as_bytes, start=offset, end=end, checksum=None
                )
            except BlobNotFoundError:
                raise BlobError(f"gcs read {key!r}: the object changed while being read") from None
            if not data:
                raise BlobError(f"gcs read {key!r}: the object ended early")
            offset += len(data)
            view = memoryview(data)
            for start in range(0, len(view), chunk_size):
                yield bytes(view[start : start + chunk_size])

    async def exists(self, key: str) -> bool:
        blob = self._bucket.blob(self._keys.name(key))
        return bool(await self._call("stat", key, blob.exists))

    async def _list_page(self, prefix: str, wanted: str, token: str | None) -> Page:
        return await self._call("list", prefix, self._fetch_page, wanted, token)

    def _fetch_page(self, prefix: str, token: str | None, *, timeout: Any, retry: Any) -> Page:
        # One page per call, restarted from its token, so that a retry repeats only a page.
        pages = self._client.list_blobs(
            self._bucket,
            prefix=prefix,
            page_size=self._page_size,
            page_token=token,
            timeout=timeout,
            retry=retry,
        )
        page = next(pages.pages, None)
        if page is None:
            return [], None
        return [(blob.name, int(blob.size or 0)) for blob in page], pages.next_page_token

    async def delete(self, key: str) -> None:
        blob = self._bucket.blob(self._keys.name(key))
        with contextlib.suppress(BlobNotFoundError):
            await self._call("delete", key, blob.delete)

    async def close(self) -> None:
        self._threads.close()
        self._client.close()


def _abandon(writer: Any) -> None:
    """Cancel an unfinished resumable upload so that no part of it can become the object.

    BlobWriter is an io object: if it were collected unclosed, io's finaliser would call
    close(), which finalises the upload with whatever was sent, a truncated object. terminate()
    deletes the session; if that request fails, its buffer must still be closed.
    """
    with contextlib.suppress(Exception):
        writer.terminate()
    if not writer.closed:
        writer._buffer.close()  # the only way to close it without finalising


def _sdk_retry(policy: RetryPolicy) -> Any:
    from google.api_core.retry import Retry

    # The SDK draws full-jitter waits under a ceiling that starts at `initial` and doubles.
    return Retry(
        predicate=lambda exc: _classify(exc) is Fault.TRANSIENT,
        initial=max(policy.base_delay_s, 0.01),
        maximum=policy.max_delay_s,
        multiplier=2.0,
        timeout=_budget_s(policy),
    )


def _budget_s(policy: RetryPolicy) -> float | None:
    """The longest a retried step may take in all: the deadline, else every attempt's bound."""
    if policy.deadline_s is not None:
        return policy.deadline_s
    if policy.attempts is None or policy.attempt_timeout_s is None:
        return None
    return policy.attempts * policy.attempt_timeout_s


def _classify(exc: BaseException) -> Fault:
    import requests
    from google.api_core import exceptions as api
    from google.auth.exceptions import TransportError

    status = _media_status(exc)
    if status is not None:
        # Resumable uploads report HTTP failures as InvalidResponse, not as API errors.
        if status in (408, 429) or status >= 500:
            return Fault.TRANSIENT
        return {404: Fault.NOT_FOUND, 412: Fault.CONFLICT}.get(status, Fault.OTHER)
    if isinstance(exc, api.RetryError):
        return Fault.TRANSIENT  # the SDK's retries of a resumable chunk ran out of time
    if isinstance(exc, api.ServerError) and not isinstance(exc, api.MethodNotImplemented):
        return Fault.TRANSIENT
    if isinstance(exc, api.GoogleAPICallError) and exc.code in (408, 429):
        return Fault.TRANSIENT
    if isinstance(exc, requests.RequestException | TransportError | ConnectionError | TimeoutError):
        # RequestException covers connection errors, timeouts and cut chunked bodies; the
        # requests errors that are the caller's fault (bad URL, schema) cannot occur here.
        return Fault.TRANSIENT
    if isinstance(exc, api.NotFound):
        return Fault.NOT_FOUND
    if isinstance(exc, api.PreconditionFailed):
        return Fault.CONFLICT
    return Fault.OTHER


def _describe(exc: BaseException) -> str:
    from google.api_core import exceptions as api

    if isinstance(exc, api.GoogleAPICallError):
        return f"{type(exc).__name__} (HTTP {exc.code})"
    status = _media_status(exc)
    if status is not None:
        return f"{type(exc).__name__} (HTTP {status})"
    return type(exc).__name__


def _media_status(exc: BaseException) -> int | None:
    """The HTTP status of a resumable-media InvalidResponse, None for other exceptions."""
    from google.cloud.storage.exceptions import InvalidResponse

    kinds: tuple[type[BaseException], ...] = (InvalidResponse,)
    with contextlib.suppress(ImportError):
        from google.resumable_media.common import InvalidResponse as LegacyInvalidResponse

        kinds += (LegacyInvalidResponse,)
    if not isinstance(exc, kinds):
        return None
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


_ERRORS = ErrorModel(classify=_classify, describe=_describe)
