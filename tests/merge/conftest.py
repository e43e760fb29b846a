"""Fixtures of the merge tests: a nats-server of each test's own (published train tasks are
read back from the stream) and the filesystem blob store."""

from tests.support.inproc import fs_blobs, own_connection

__all__ = ["fs_blobs", "own_connection"]
