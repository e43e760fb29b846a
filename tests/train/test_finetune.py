"""Fine-tuning the tiny model: progress, determinism, a clean working directory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from meshkit.domain.embedding import encode, load_model
from tests.train.support import sample_bundle
from trainsvc.finetune import TrainConfig, TrainingStopped, base_model_identity, fine_tune
from trainsvc.pairs import build_pairs

CONFIG = TrainConfig(epochs=1, batch_size=8, learning_rate=1e-3, seed=5, max_pairs=64)


def _train(model_dir: Path, progress: list[tuple[int, int]] | None = None) -> np.ndarray:
    model = load_model(model_dir)
    pairs = build_pairs(sample_bundle(), seed=CONFIG.seed, max_pairs=CONFIG.max_pairs)
    steps = fine_tune(
        model,
        pairs.train,
        CONFIG,
        device="cpu",
        on_progress=lambda s, t: progress.append((s, t)) if progress is not None else None,
        should_stop=lambda: False,
    )
    assert steps == 8  # 64 pairs in batches of 8
    return encode(model, ["which project uses Zig", "a chat app"])


def test_training_reports_progress_and_leaves_no_files(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = encode(load_model(tiny_model_dir), ["which project uses Zig", "a chat app"])
    progress: list[tuple[int, int]] = []
    after = _train(tiny_model_dir, progress)
    assert progress[0] == (0, 8) and progress[-1] == (8, 8)
    assert [s for s, _ in progress] == sorted(s for s, _ in progress)
    assert not np.allclose(before, after), "training changed the model"
    assert os.listdir(tmp_path) == [], "no checkpoints or runs/ in the working directory"


def test_the_same_seed_trains_the_same_model(tiny_model_dir: Path) -> None:
    np.testing.assert_array_equal(_train(tiny_model_dir), _train(tiny_model_dir))


def test_a_stop_request_ends_training_early(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    pairs = build_pairs(sample_bundle(), seed=1, max_pairs=64)
    seen: list[int] = []
    with pytest.raises(TrainingStopped):
        fine_tune(
            model,
            pairs.train,
            CONFIG,
            device="cpu",
            on_progress=lambda s, t: seen.append(s),
            should_stop=lambda: len(seen) >= 3,
        )
    assert max(seen) < 8


def test_the_config_digest_names_everything_that_shapes_the_model(tiny_model_dir: Path) -> None:
    identity = base_model_identity(str(tiny_model_dir))
    assert len(identity) == 32 and identity == base_model_identity(str(tiny_model_dir))
    digest = CONFIG.digest(identity)
    assert digest == CONFIG.digest(identity)
    assert digest != CONFIG.digest("another-base-model")
    other = TrainConfig(epochs=2, batch_size=8, learning_rate=1e-3, seed=5, max_pairs=64)
    assert digest != other.digest(identity)
