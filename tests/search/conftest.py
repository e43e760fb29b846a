"""Fixtures of the search tests: the tiny model, a blob store, a user of the test's own."""

from tests.train.support import blobs, tiny_model_dir, user

__all__ = ["blobs", "tiny_model_dir", "user"]
