"""LoRA adapters (CONTEXTMESH_TRAIN_KIND=adapter) on the tiny model: what a training saves and
stores, what the manifest says, and that the adapter rebuilds the trained model on a shared
base without changing that base.

A few steps on the sample bundle: the tiny model's rankings are noise, but the run is seeded,
and at this learning rate its adapter lifts the held-out MRR@10, so it is published.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from meshkit.blob import BlobStore
from meshkit.config import TrainSettings
from meshkit.domain.adapter import (
    ADAPTER_MANIFEST,
    ADAPTER_WEIGHTS,
    adapter_base,
    add_lora,
    apply_adapter,
    base_model_identity,
    is_adapter_folder,
    own_nbytes,
)
from meshkit.domain.embedding import encode, load_model
from tests.train.support import sample_bundle
from trainsvc.finetune import TrainConfig
from trainsvc.pipeline import TrainResult, train_on_bundle
from trainsvc.store import Manifest, ModelLayout, read_manifest, store_result

ADAPTER = TrainConfig(
    epochs=1, batch_size=8, learning_rate=1e-2, seed=5, max_pairs=64, kind="adapter"
)
# Seed 2: a full run that gains overall and on the paraphrases, so the gate publishes it.
FULL = replace(ADAPTER, kind="full", learning_rate=1e-3, seed=2)


def _train(model_dir: Path, workdir: Path, config: TrainConfig) -> TrainResult:
    return train_on_bundle(
        sample_bundle(),
        config,
        base_model=str(model_dir),
        device_setting="cpu",
        workdir=workdir,
        on_progress=lambda step, total: None,
        should_stop=lambda: False,
    )


@pytest.fixture(scope="module")
def adapter_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return _train(tiny_model_dir, tmp_path_factory.mktemp("adapter-run"), ADAPTER)


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_an_adapter_training_saves_only_the_adapter(
    adapter_run: TrainResult, tiny_model_dir: Path
) -> None:
    result = adapter_run
    assert result.steps > 0 and result.improved, "this run is chosen to improve the tiny model"
    assert result.kind == "adapter"
    assert result.base_model == base_model_identity(tiny_model_dir)
    folder = result.model_dir
    assert folder is not None and is_adapter_folder(folder)
    assert sorted(p.name for p in folder.iterdir()) == [ADAPTER_MANIFEST, ADAPTER_WEIGHTS]
    assert adapter_base(folder) == result.base_model
    # The tiny model is small, yet its adapter is still a fraction of it (MiniLM's: ~1 %).
    assert _bytes(folder) * 4 < _bytes(tiny_model_dir)


def test_the_adapter_on_a_shared_base_ranks_like_the_trained_model(
    adapter_run: TrainResult, tiny_model_dir: Path
) -> None:
    """The stored embeddings came from the trained model; the adapter applied to a fresh base
    must embed passages the same way, share the base's weights and leave the base as it was."""
    assert adapter_run.model_dir is not None and adapter_run.embeddings is not None
    base = load_model(tiny_model_dir)
    texts = [p.text for p in adapter_run.passages]
    before = encode(base, texts)
    view = apply_adapter(base, adapter_run.model_dir)
    np.testing.assert_allclose(encode(view, texts), adapter_run.embeddings, atol=1e-5)
    assert not np.allclose(encode(view, texts), before, atol=1e-4), "the adapter moved nothing"
    np.testing.assert_array_equal(encode(base, texts), before)
    adapter_bytes = own_nbytes(view, base)
    assert 0 < adapter_bytes < _bytes(adapter_run.model_dir) * 2


def test_a_full_training_still_saves_a_whole_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = _train(tiny_model_dir, tmp_path, FULL)
    assert result.improved and result.kind == "full" and result.model_dir is not None
    assert (result.model_dir / "modules.json").is_file()
    assert not is_adapter_folder(result.model_dir)


async def test_the_manifest_says_the_kind_and_base_and_reads_back(
    adapter_run: TrainResult, blobs: BlobStore, user: str
) -> None:
    layout = ModelLayout(user, "b" * 64, "c" * 32)
    stored = await store_result(blobs, layout, adapter_run)
    assert stored.kind == "adapter" and stored.base_model == adapter_run.base_model
    document = json.loads(await blobs.get(layout.manifest_key))
    assert document["kind"] == "adapter" and document["base_model"] == adapter_run.base_model
    read = await read_manifest(blobs, layout)
    assert read is not None and read == replace(stored, seconds=read.seconds)
    assert set(stored.files) == {ADAPTER_MANIFEST, ADAPTER_WEIGHTS}


def test_a_manifest_from_before_adapters_is_a_full_model() -> None:
    metrics = {"mrr_at_10": 0.5, "recall_at_1": 0.4, "recall_at_5": 0.9, "queries": 10}
    legacy = {
        "format": "contextmesh.model/v1",
        "bundle_hash": "b",
        "config_digest": "c",
        "improved": True,
        "base": metrics,
        "tuned": metrics,
        "model_key": "models/u/b/c/d/model",
        "embeddings_key": "models/u/b/c/d/embeddings.npy",
    }
    manifest = Manifest.from_json(legacy)
    assert manifest.kind == "full" and manifest.base_model == ""
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_the_kind_setting_picks_the_config() -> None:
    adapter = TrainConfig.from_settings(TrainSettings(kind="adapter", adapter_rank=4))
    assert adapter.kind == "adapter" and adapter.lora.rank == 4
    assert adapter.learning_rate == TrainSettings.adapter_learning_rate
    full = TrainConfig.from_settings(TrainSettings(kind="full"))
    assert full.kind == "full" and full.learning_rate == TrainSettings.learning_rate
    assert adapter.digest("base") != full.digest("base")
    assert adapter.digest("base") != replace(adapter, adapter_rank=8).digest("base")


def test_a_full_config_keeps_the_digest_it_had_before_adapters() -> None:
    """Stored full models are found again after the upgrade: the digest of a full config is
    the one computed before `kind` existed (this value was printed by that code)."""
    config = TrainConfig(epochs=1, batch_size=16, learning_rate=5e-5, seed=42, max_pairs=4000)
    assert config.digest("base") == PRE_ADAPTER_DIGEST


PRE_ADAPTER_DIGEST = "8d927e92f9d7aae30175c1a7b6a78202"


def test_the_adapter_starts_from_its_seed_whatever_was_drawn_before(tiny_model_dir: Path) -> None:
    """LoRA's A starts random: from the training seed, or the same bundle and settings would
    train different adapters depending on what the process did before."""
    import torch

    def lora_a(seed: int, drawn_before: int) -> list[torch.Tensor]:
        torch.manual_seed(drawn_before)
        torch.rand(drawn_before + 1)
        model = load_model(tiny_model_dir)
        add_lora(model, ADAPTER.lora, seed=seed)
        return [p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n]

    first, second = lora_a(5, drawn_before=1), lora_a(5, drawn_before=99)
    assert first and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, lora_a(6, 1), strict=True))
