"""Blob store throughput: put and get of 1 KB, 1 MB and 100 MB objects on every backend.

    .venv/bin/python -m bench.blob_bench [--runs 5] [--backends fs,azure,gcs,s3]
                                         [--sizes 1KB,1MB,100MB] [--json FILE]

fs writes to a temporary directory; azure, gcs and s3 run against Azurite, fake-gcs-server
and moto, started on free loopback ports (tests/support/emulators.py), with each backend's
production settings (8 MiB parts). Each run puts a batch of distinct objects then gets them
back; the figure is the median over runs. Small objects are timed in batches, since one 1 KB
call is below the clock's and the scheduler's noise. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from meshkit.blob import BlobStore, open_blob_store

__all__ = ["Result", "main"]

SIZES = {"1KB": 1024, "1MB": 1024 * 1024, "100MB": 100 * 1024 * 1024}
BATCH = {"1KB": 100, "1MB": 20, "100MB": 1}  # objects per run
BUCKET = "bench"


@dataclass(frozen=True)
class Result:
    backend: str
    size: str
    runs: int
    put_mb_s: float
    get_mb_s: float
    put_ops_s: float
    get_ops_s: float


@contextmanager
def backend_env(backend: str, workdir: Path) -> Iterator[str]:
    """Yield the store URL for backend, its emulator running and its env set."""
    if backend == "fs":
        yield f"file://{workdir / 'fs'}"
        return
    from tests.support import emulators

    start = {
        "azure": emulators.start_azurite,
        "gcs": emulators.start_fake_gcs,
        "s3": emulators.start_moto_s3,
    }[backend]
    with start(workdir / backend) as emulator:
        emulator.create_bucket(BUCKET)
        saved = {name: os.environ.get(name) for name in emulator.env}
        os.environ.update(emulator.env)
        try:
            yield emulator.url(BUCKET)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


async def measure(store: BlobStore, label: str, runs: int, run_id: str) -> tuple[float, float]:
    """Median seconds per object for put and for get over `runs` batches."""
    size, batch = SIZES[label], BATCH[label]
    data = os.urandom(size)
    puts, gets = [], []
    for run in range(runs):
        keys = [f"{run_id}/{label}/{run}/{i}" for i in range(batch)]
        started = time.perf_counter()
        for key in keys:
            await store.put(key, data)
        puts.append((time.perf_counter() - started) / batch)
        started = time.perf_counter()
        for key in keys:
            got = await store.get(key)
            assert len(got) == size
            del got
        gets.append((time.perf_counter() - started) / batch)
        for key in keys:
            await store.delete(key)
    return statistics.median(puts), statistics.median(gets)


async def bench_backend(url: str, backend: str, sizes: list[str], runs: int) -> list[Result]:
    store = open_blob_store(url)
    results = []
    try:
        for label in sizes:
            # One unmeasured round first: connection set-up and lazy imports are not throughput.
            await measure(store, label, 1, "warm")
            put_s, get_s = await measure(store, label, runs, "run")
            mb = SIZES[label] / 1e6
            results.append(
                Result(backend, label, runs, mb / put_s, mb / get_s, 1 / put_s, 1 / get_s)
            )
            print(
                f"  {backend} {label}: put {mb / put_s:.1f} MB/s, get {mb / get_s:.1f} MB/s",
                file=sys.stderr,
            )
    finally:
        await store.close()
    return results


def table(results: list[Result]) -> str:
    lines = [
        "| backend | size | put MB/s | get MB/s | put ops/s | get ops/s |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {r.size} | {r.put_mb_s:.1f} | {r.get_mb_s:.1f} | "
            f"{r.put_ops_s:.3g} | {r.get_ops_s:.3g} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", default="fs,azure,gcs,s3")
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    sizes = args.sizes.split(",")
    results: list[Result] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="blob-bench-")))
        for backend in args.backends.split(","):
            with backend_env(backend, workdir) as url:
                results += asyncio.run(bench_backend(url, backend, sizes, args.runs))
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, {args.runs} runs\n")
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
