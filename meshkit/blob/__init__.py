"""Blob stores: one interface, several backends, chosen by URL (see open_blob_store).

The semantics every backend keeps are in meshkit.blob.base; docs/storage.md says how to
configure each one. Importing this package imports no cloud SDK: each backend imports its
SDK only when a store of that kind is opened.
"""

from meshkit.blob.azure import AzureBlobStore
from meshkit.blob.base import CHUNK_SIZE, BlobInfo, BlobStore, Data, as_chunks, validate_key
from meshkit.blob.fs import FilesystemBlobStore
from meshkit.blob.gcs import GCSBlobStore
from meshkit.blob.measured import MeasuredBlobStore
from meshkit.blob.retry import SocketTimeouts
from meshkit.blob.s3 import S3BlobStore
from meshkit.blob.url import open_blob_store

__all__ = [
    "CHUNK_SIZE",
    "AzureBlobStore",
    "BlobInfo",
    "BlobStore",
    "Data",
    "FilesystemBlobStore",
    "GCSBlobStore",
    "MeasuredBlobStore",
    "S3BlobStore",
    "SocketTimeouts",
    "as_chunks",
    "open_blob_store",
    "validate_key",
]
