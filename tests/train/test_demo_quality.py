"""The real all-MiniLM-L6-v2, tuned on the demo repositories' bundle (in full, or as a LoRA
adapter), beats itself untuned on held-out queries phrased unlike any training query."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from meshkit.domain.adapter import ADAPTER_MANIFEST
from meshkit.domain.embedding import base_model_path, prepare_offline
from tests.train.support import local_bundle
from trainsvc.finetune import TrainConfig
from trainsvc.pipeline import train_on_bundle

# Bounded so the test stays within a few minutes on 2 CPU cores (25 steps of batch 16).
CONFIG = TrainConfig(epochs=1, batch_size=16, learning_rate=5e-5, seed=42, max_pairs=400)
ADAPTER = replace(CONFIG, kind="adapter", learning_rate=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("config", [CONFIG, ADAPTER], ids=["full", "adapter"])
async def test_tuning_on_the_demo_bundle_beats_the_base_model(
    tmp_path: Path, config: TrainConfig
) -> None:
    prepare_offline()
    bundle = await local_bundle()
    assert len(bundle.repositories) >= 8
    started = time.monotonic()
    progress: list[tuple[int, int]] = []
    result = train_on_bundle(
        bundle,
        config,
        base_model=base_model_path(None),
        device_setting="cpu",
        workdir=tmp_path,
        on_progress=lambda step, total: progress.append((step, total)),
        should_stop=lambda: False,
    )
    print(
        f"\nbase  {result.base.summary()}\ntuned {result.tuned.summary()}\n"
        f"{result.pairs} pairs, {result.steps} steps, {time.monotonic() - started:.0f} s"
    )
    assert result.base.queries >= 100
    assert result.tuned.mrr_at_10 > result.base.mrr_at_10
    assert result.improved and result.model_dir is not None
    if config.kind == "adapter":
        assert (result.model_dir / ADAPTER_MANIFEST).is_file() and result.kind == "adapter"
        size = sum(f.stat().st_size for f in result.model_dir.rglob("*") if f.is_file())
        assert size < 2_000_000, "a user's model is the adapter alone, not a copy of MiniLM"
    else:
        assert (result.model_dir / "modules.json").is_file()
    assert progress[-1] == (result.steps, result.steps)
