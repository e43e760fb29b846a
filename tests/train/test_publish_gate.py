"""The publish gate of the real pipeline: the held-out metrics, not the run, decide whether a
tuned model is published.

The tiny model's rankings are noise, but they are deterministic: with a learning rate of 0
the optimiser leaves every weight where it was, so the tuned model ranks exactly like the
base model and must not be published; a few steps at 1e-3 on the sample bundle (seed 2) lift
its MRR@10 (0.56 -> 0.64) and its paraphrases' (0.31 -> 0.34, so the paraphrase veto does not
hold it back), and that model must be.
"""

from __future__ import annotations

from pathlib import Path

from tests.train.support import sample_bundle
from trainsvc.evaluate import beats
from trainsvc.finetune import TrainConfig
from trainsvc.pipeline import TrainResult, train_on_bundle


def _train(model_dir: Path, workdir: Path, learning_rate: float) -> TrainResult:
    config = TrainConfig(epochs=1, batch_size=8, learning_rate=learning_rate, seed=2, max_pairs=64)
    return train_on_bundle(
        sample_bundle(),
        config,
        base_model=str(model_dir),
        device_setting="cpu",
        workdir=workdir,
        on_progress=lambda step, total: None,
        should_stop=lambda: False,
    )


def test_a_tuning_that_ranks_no_better_is_not_published(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = _train(tiny_model_dir, tmp_path, learning_rate=0.0)
    assert result.steps > 0, "the run trained; only its result is no better"
    assert result.tuned == result.base
    assert not result.improved
    assert result.model_dir is None and result.embeddings is None
    assert list(tmp_path.iterdir()) == [], "no model folder is saved for a model that lost"


def test_a_tuning_that_ranks_better_is_published(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = _train(tiny_model_dir, tmp_path, learning_rate=1e-3)
    assert beats(result.tuned, result.base), "this run is chosen to improve the tiny model"
    assert result.improved
    assert result.model_dir is not None and (result.model_dir / "modules.json").is_file()
    assert result.embeddings is not None and len(result.embeddings) == len(result.passages)
