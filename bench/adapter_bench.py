"""What serving a LoRA adapter on the shared base model costs, on this machine's CPU.

    .venv/bin/python bench/adapter_bench.py [--rank 8] [--views 20] [--queries 200]

Saves a random adapter of the given rank on the packaged all-MiniLM-L6-v2 (as trainsvc saves a
trained one), then measures: the adapter folder's bytes and the bytes a loaded view adds to
the base (what searchsvc's cache counts); the time to build a view from the folder (no blob
download: that is the store's latency); and one-query encode latency, p50 and p99, for the
base model and for a view (the unmerged LoRA layers' overhead). Loads no bundle.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshkit.domain.adapter import (  # noqa: E402
    LoraSpec,
    add_lora,
    apply_adapter,
    base_model_identity,
    own_nbytes,
    save_adapter,
)
from meshkit.domain.embedding import (  # noqa: E402
    base_model_path,
    encode,
    load_model,
    model_nbytes,
    prepare_offline,
)

QUERIES = [
    "payments and refunds",
    "Which project uses Kafka?",
    "real-time dashboards with WebSockets",
    "has this developer deployed to Kubernetes with Helm",
    "forecasting solar output",
    "routing parcels for deliveries",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed_queries(model: object, count: int) -> list[float]:
    encode(model, QUERIES)  # type: ignore[arg-type]  # warm-up
    timings = []
    for i in range(count):
        begin = time.perf_counter()
        encode(model, [QUERIES[i % len(QUERIES)]])  # type: ignore[arg-type]
        timings.append((time.perf_counter() - begin) * 1000)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--views", type=int, default=20)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    prepare_offline()
    import torch

    path = base_model_path(None)
    base = load_model(path)
    spec = LoraSpec(rank=args.rank, alpha=2 * args.rank)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "adapter"
        trained = load_model(path)
        add_lora(trained, spec, seed=1)
        with torch.no_grad():
            for name, parameter in trained.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.01)
        save_adapter(trained, folder, spec, base_model_identity(path))
        files = sum(f.stat().st_size for f in folder.iterdir())
        apply_adapter(base, folder)  # peft's first import and injection
        builds = []
        for _ in range(args.views):
            begin = time.perf_counter()
            view = apply_adapter(base, folder)
            builds.append((time.perf_counter() - begin) * 1000)
    added = own_nbytes(view, base)
    base_ms = timed_queries(base, args.queries)
    view_ms = timed_queries(view, args.queries)
    print("| rank | adapter files | bytes a view adds | base model bytes | view build (median) |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| {args.rank} | {files:,} | {added:,} | {model_nbytes(base):,} "
        f"| {statistics.median(builds):.1f} ms |"
    )
    print()
    print("| one-query encode | p50 | p99 |")
    print("|---|---:|---:|")
    print(f"| base model | {pct(base_ms, 0.5):.1f} ms | {pct(base_ms, 0.99):.1f} ms |")
    print(f"| base + adapter view | {pct(view_ms, 0.5):.1f} ms | {pct(view_ms, 0.99):.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
