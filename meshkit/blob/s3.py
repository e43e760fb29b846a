"""The S3 blob store (AWS S3 and S3-compatible servers), on boto3 calls run in threads.

Why boto3 in threads rather than an asyncio SDK: boto3 is already a dependency, it is the
reference implementation of the AWS credential chain (environment, profile, SSO, container
and instance roles) and of `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`, and its client is
thread-safe. The asyncio alternative, aiobotocore, pins exact botocore versions and would
fight boto3 for them. Blob calls are few and large, so a small private thread pool costs
little.

Semantics (see meshkit.blob.base): one request for an object that fits in one part, a
multipart upload otherwise, so memory holds one part at a time. `create` sends
`If-None-Match: *` on PutObject or on CompleteMultipartUpload: the object appears only when
the upload completes, and only if the key is still free, so concurrent creators produce one
winner and a writer that dies leaves no object (its parts are aborted, or expire under the
bucket's AbortIncompleteMultipartUpload rule, which a deployment should set).
"""

from __future__ import annotations

import contextlib
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

__all__ = ["S3BlobStore"]

MIN_PART_SIZE = 5 * 1024 * 1024  # S3 refuses smaller parts, except the last
DEFAULT_PART_SIZE = 8 * 1024 * 1024

_TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "InternalError",
        "ServiceUnavailable",
        # Two conditional writes to one key raced inside S3; the retry gets a clean answer.
        "ConditionalRequestConflict",
    }
)


class S3BlobStore(CloudBlobStore):
    """Blobs as objects in one S3 bucket, under an optional key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        part_size: int = DEFAULT_PART_SIZE,
        page_size: int = 1000,
        retry: RetryPolicy = BLOB_CALL,
        timeouts: SocketTimeouts | None = None,
        max_workers: int = 8,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"S3 parts must be at least {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self._keys = KeySpace(prefix)
        self._part_size = part_size
        self._page_size = page_size
        self._retry = retry
        self._threads = BlockingCalls("s3", max_workers)
        self._client = (
            client
            if client is not None
            else _make_client(timeouts or SocketTimeouts(), max_workers)
        )

    @classmethod
    def from_env(cls, bucket: str, prefix: str = "", **options: Any) -> S3BlobStore:
        """A store using the standard AWS configuration: environment, profile or role."""
        import boto3

        if boto3.session.Session().get_credentials() is None:
            raise ConfigError(
                "AWS_ACCESS_KEY_ID",
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or run with a role",
            )
        return cls(bucket, prefix, **options)

    async def _call(
        self,
        what: str,
        key: str,
        fn: Callable[..., Any],
        conflict: Callable[[str], BlobError] | None = None,
        **kwargs: Any,
    ) -> Any:
        return await call(
            lambda: self._threads.run(fn, Bucket=self.bucket, **kwargs),
            policy=self._retry,
            errors=_ERRORS,
            what=f"s3 {what} {key!r}",
            key=key,
            conflict=conflict,
        )

    async def _write(self, key: str, data: Data, *, create: bool) -> BlobInfo:
        name = self._keys.name(key)
        condition = {"IfNoneMatch": "*"} if create else {}
        conflict = BlobExistsError if create else None
        parts = PartReader(data, self._part_size)
        first = await parts.read()
        if await parts.at_end():
            await self._call(
                "put", key, self._client.put_object, conflict, Key=name, Body=first, **condition
            )
            return BlobInfo(key, parts.total)
        upload = await self._call(
            "create multipart upload",
            key,
            self._client.create_multipart_upload,
            Key=name,
            ChecksumAlgorithm="CRC32",
        )
        upload_id = upload["UploadId"]
        try:
            done: list[dict[str, Any]] = []
            part, first = first, b""  # hold one part at a time, not the first all along
            while part:
                number = len(done) + 1
                sent = await self._call(
                    f"upload part {number}",
                    key,
                    self._client.upload_part,
                    Key=name,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=part,
                    ChecksumAlgorithm="CRC32",
                )
                done.append(
                    {
                        "PartNumber": number,
                        "ETag": sent["ETag"],
                        "ChecksumCRC32": sent["ChecksumCRC32"],
                    }
                )
                part = b""  # drop the sent part before the next one is buffered
                part = await parts.read()
            await self._call(
                "complete multipart upload",
                key,
                self._client.complete_multipart_upload,
                conflict,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},
                **condition,
            )
        except BaseException:
            await self._abort(name, upload_id)
            raise
        return BlobInfo(key, parts.total)

    async def _abort(self, name: str, upload_id: str) -> None:
        # Best effort, and shielded from the cancellation that may have brought us here; a
        # lifecycle rule removes what a dead process could not.
        with contextlib.suppress(Exception):
            await self._threads.run(
                self._client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
            )

    async def get(self, key: str) -> bytes:
        name = self._keys.name(key)

        def read_all() -> bytes:
            response = self._client.get_object(Bucket=self.bucket, Key=name)
            with contextlib.closing(response["Body"]) as body:
                return bytes(body.read())

        return await call(
            lambda: self._threads.run(read_all),
            policy=self._retry,
            errors=_ERRORS,
            what=f"s3 get {key!r}",
            key=key,
        )

    async def open_read(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        name = self._keys.name(key)
        head = await self._call("head", key, self._client.head_object, Key=name)
        size, etag = int(head["ContentLength"]), head["ETag"]
        offset = 0
        body: Any = None

        def next_chunk() -> bytes:
            # One streamed GET; after a fault, a ranged GET pinned to the same ETag resumes.
            nonlocal body
            try:
                if body is None:
                    response = self._client.get_object(
                        Bucket=self.bucket, Key=name, Range=f"bytes={offset}-", IfMatch=etag
                    )
                    body = response["Body"]
                return bytes(body.read(chunk_size))
            except Exception:
                if body is not None:
                    body.close()
                    body = None
                raise

        try:
            while offset < size:
                chunk = await call(
                    lambda: self._threads.run(next_chunk),
                    policy=self._retry,
                    errors=_ERRORS,
                    what=f"s3 read {key!r}",
                    key=key,
                    conflict=_changed,
                )
                if not chunk:
                    raise BlobError(f"s3 read {key!r}: the object ended early")
                offset += len(chunk)
                yield chunk
        finally:
            if body is not None:
                body.close()

    async def exists(self, key: str) -> bool:
        try:
            await self._call("head", key, self._client.head_object, Key=self._keys.name(key))
        except BlobNotFoundError:
            return False
        return True

    async def _list_page(self, prefix: str, wanted: str, token: str | None) -> Page:
        page_args: dict[str, Any] = {"Prefix": wanted, "MaxKeys": self._page_size}
        if token:
            page_args["ContinuationToken"] = token
        page = await self._call("list", prefix, self._client.list_objects_v2, **page_args)
        names = [(item["Key"], int(item["Size"])) for item in page.get("Contents", ())]
        return names, page.get("NextContinuationToken") if page.get("IsTruncated") else None

    async def delete(self, key: str) -> None:
        # S3 answers 204 for a missing key too.
        await self._call("delete", key, self._client.delete_object, Key=self._keys.name(key))

    async def close(self) -> None:
        self._threads.close()
        self._client.close()


def _changed(key: str) -> BlobError:
    return BlobError(f"s3 read {key!r}: the object changed while it was being read")


def _make_client(timeouts: SocketTimeouts, max_workers: int) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=timeouts.connect_s,
        read_timeout=timeouts.read_s,
        # meshkit.blob.retry retries; botocore's own retries would multiply the attempts.
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max_workers,
        s3={"addressing_style": os.environ.get("AWS_S3_ADDRESSING_STYLE", "auto")},
    )
    # The endpoint comes from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, read by botocore.
    return boto3.session.Session().client("s3", config=config)


def _classify(exc: BaseException) -> Fault:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ConnectionError | HTTPClientError | OSError):
        return Fault.TRANSIENT
    if not isinstance(exc, ClientError):
        return Fault.OTHER
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    if code in _TRANSIENT_CODES or status in (408, 429) or status >= 500:
        return Fault.TRANSIENT
    if code in ("NoSuchKey", "404", "NotFound"):
        return Fault.NOT_FOUND
    if code in ("PreconditionFailed", "412") or status == 412:
        return Fault.CONFLICT
    return Fault.OTHER


def _describe(exc: BaseException) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{error.get('Code', 'error')} (HTTP {status})"
    return type(exc).__name__


_ERRORS = ErrorModel(classify=_classify, describe=_describe)
