"""A child process that streams a create or put slowly, for the killed-writer test.

    python -m tests.blob.slow_writer SPEC_JSON KEY MODE TOTAL_BYTES

It prints `sent N` after each chunk it hands to the store, so the parent can kill it while
an upload is under way, with parts already sent and more to come.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

from tests.blob.stores import StoreSpec, build_store

CHUNK = 256 * 1024


async def slow_chunks(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        chunk = bytes([sent // CHUNK % 251]) * min(CHUNK, total - sent)
        yield chunk
        sent += len(chunk)
        print(f"sent {sent}", flush=True)
        await asyncio.sleep(0.01)


async def main(spec: StoreSpec, key: str, mode: str, total: int) -> None:
    os.environ.update(spec.env)
    async with build_store(spec) as store:
        write = store.create if mode == "create" else store.put
        await write(key, slow_chunks(total))
    print("done", flush=True)


if __name__ == "__main__":
    spec_json, key, mode, total = sys.argv[1:5]
    asyncio.run(main(StoreSpec.from_json(spec_json), key, mode, int(total)))
