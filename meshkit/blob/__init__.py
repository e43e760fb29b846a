"""Blob stores: one interface, several backends, chosen by URL (see open_blob_store)."""

from meshkit.blob.base import CHUNK_SIZE, BlobInfo, BlobStore, Data, as_chunks, validate_key
from meshkit.blob.fs import FilesystemBlobStore
from meshkit.blob.url import open_blob_store

__all__ = [
    "CHUNK_SIZE",
    "BlobInfo",
    "BlobStore",
    "Data",
    "FilesystemBlobStore",
    "as_chunks",
    "open_blob_store",
    "validate_key",
]
