"""The publish gate: a tuned model is saved and its embeddings kept only when it beats the base
model by more than the margin, and a bundle too small to judge that is not trained on (two
repositories and MIN_TRAIN_PAIRS training pairs are just enough).

Written against the mutants tools/mutation.py found surviving (docs/testing.md).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from meshkit.domain.passages import Passage
from tests.train.support import bundle, sample_bundle, sample_repositories
from trainsvc import pipeline
from trainsvc.evaluate import MIN_IMPROVEMENT, Encoder, Metrics, beats
from trainsvc.finetune import TrainConfig
from trainsvc.pairs import HeldOutQuery
from trainsvc.pipeline import MIN_TRAIN_PAIRS, NotEnoughData, train_on_bundle

CONFIG = TrainConfig(epochs=1, batch_size=8, learning_rate=5e-5, seed=1, max_pairs=64)
BASE = Metrics(0.5, 0.4, 0.9, 10)


def test_a_gain_of_exactly_the_margin_is_not_enough() -> None:
    assert not beats(Metrics(BASE.mrr_at_10 + MIN_IMPROVEMENT, 1.0, 1.0, 10), BASE)
    assert beats(Metrics(BASE.mrr_at_10 + 2 * MIN_IMPROVEMENT, 0.0, 0.0, 10), BASE)


def test_a_paraphrase_loss_of_exactly_the_margin_is_float_noise() -> None:
    base = dataclasses.replace(BASE, paraphrase_mrr_at_10=0.5, paraphrase_queries=4)
    noise = dataclasses.replace(base, mrr_at_10=0.9, paraphrase_mrr_at_10=0.5 - MIN_IMPROVEMENT)
    loss = dataclasses.replace(noise, paraphrase_mrr_at_10=0.5 - 2 * MIN_IMPROVEMENT)
    assert beats(noise, base)
    assert not beats(loss, base)


def _train(tiny_model_dir: Path, workdir: Path, scores: Iterator[Metrics]) -> pipeline.TrainResult:
    """Train the tiny model on the sample bundle, the evaluations scoring base then tuned."""
    real_evaluate = pipeline.evaluate

    def evaluate(
        encode: Encoder, passages: Sequence[Passage], held_out: Sequence[HeldOutQuery]
    ) -> tuple[Metrics, np.ndarray]:
        _, vectors = real_evaluate(encode, passages, held_out)
        return next(scores), vectors

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "evaluate", evaluate)
        return train_on_bundle(
            sample_bundle(),
            CONFIG,
            base_model=str(tiny_model_dir),
            device_setting="cpu",
            workdir=workdir,
            on_progress=lambda step, total: None,
            should_stop=lambda: False,
        )


def test_a_tuned_model_that_does_not_beat_the_base_is_not_kept(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = _train(tiny_model_dir, tmp_path, iter([BASE, BASE]))

    assert not result.improved
    assert result.model_dir is None and result.embeddings is None
    assert not (tmp_path / "model").exists()


def test_a_tuned_model_that_beats_the_base_is_saved_with_its_embeddings(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = _train(tiny_model_dir, tmp_path, iter([BASE, Metrics(0.9, 0.8, 1.0, 10)]))

    assert result.improved
    assert result.model_dir == tmp_path / "model"
    assert (tmp_path / "model").is_dir()
    assert result.embeddings is not None
    assert result.embeddings.shape[0] == len(result.passages)


def _train_on(
    tiny_model_dir: Path, workdir: Path, repositories: int, max_pairs: int
) -> pipeline.TrainResult:
    """Train the tiny model, unpatched, on the first sample repositories."""
    return train_on_bundle(
        bundle("alice", sample_repositories()[:repositories]),
        dataclasses.replace(CONFIG, max_pairs=max_pairs),
        base_model=str(tiny_model_dir),
        device_setting="cpu",
        workdir=workdir,
        on_progress=lambda step, total: None,
        should_stop=lambda: False,
    )


def test_one_repository_is_too_little_to_train_on(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(NotEnoughData, match="1 repositories"):
        _train_on(tiny_model_dir, tmp_path, 1, CONFIG.max_pairs)


def test_fewer_training_pairs_than_the_minimum_are_too_little(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(NotEnoughData, match=f"2 repositories with text, {MIN_TRAIN_PAIRS - 1} "):
        _train_on(tiny_model_dir, tmp_path, 2, MIN_TRAIN_PAIRS - 1)


def test_two_repositories_and_the_minimum_of_pairs_are_enough(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    result = _train_on(tiny_model_dir, tmp_path, 2, MIN_TRAIN_PAIRS)

    assert result.pairs == MIN_TRAIN_PAIRS and result.steps > 0
    # The reported time is this training's own.
    assert 0 < result.seconds <= time.monotonic() - started
