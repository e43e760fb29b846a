"""Fine-tuning a sentence-transformers model on (query, passage) pairs.

MultipleNegativesRankingLoss treats the other passages of a batch as negatives, so the
NO_DUPLICATES batch sampler keeps a passage (or query) from appearing twice in one batch,
where it would be its own negative. Hyperparameters come from TrainSettings; the run is
seeded, writes nothing to the working directory (output_dir is a temporary folder,
save_strategy="no") and reports to nothing. On CUDA it trains in mixed precision (bf16 where
the GPU supports it, fp16 otherwise); on CPU in float32.

torch and friends are imported inside the functions: trainsvc imports this module at start,
and the heavy imports happen in the training thread (or the start-up warm-up).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from meshkit.config import TrainSettings
from meshkit.domain.adapter import LoraSpec, base_model_identity, prepare_adapters
from meshkit.domain.embedding import prepare_offline
from trainsvc.pairs import PAIRS_VERSION, Pair

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "ProgressFn",
    "StopFn",
    "TrainConfig",
    "TrainingStopped",
    "base_model_identity",
    "fine_tune",
    "warm_up",
]

ProgressFn = Callable[[int, int], None]
"""Called with (step, total_steps) as training advances; from the training thread."""
StopFn = Callable[[], bool]
"""Polled every step; True stops training (shutdown, or the job was cancelled)."""

WARMUP_FRACTION = 0.1


class TrainingStopped(Exception):
    """Training was asked to stop before it finished."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything besides the bundle and the base model that decides the tuned model."""

    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    max_pairs: int
    kind: str = "full"
    """'full' tunes every weight (a model copy per user); 'adapter' trains a LoRA adapter."""
    adapter_rank: int = 4
    """LoRA rank, when kind is 'adapter'."""

    @classmethod
    def from_settings(cls, settings: TrainSettings) -> TrainConfig:
        adapter = settings.kind == "adapter"
        return cls(
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            learning_rate=settings.adapter_learning_rate if adapter else settings.learning_rate,
            seed=settings.seed,
            max_pairs=settings.max_pairs,
            kind=settings.kind,
            adapter_rank=settings.adapter_rank,
        )

    @property
    def lora(self) -> LoraSpec:
        return LoraSpec(rank=self.adapter_rank, alpha=2 * self.adapter_rank)

    def digest(self, base_model: str) -> str:
        """Hex digest of the config, the base model's identity and the pair builder's version:
        with the bundle hash, it addresses the stored model. A full fine-tune's digest leaves
        the adapter fields out, so it is the one it was before adapters existed (a refresh of
        an unchanged bundle still finds its stored model)."""
        document: dict[str, object] = {
            **asdict(self),
            "base_model": base_model,
            "pairs_version": PAIRS_VERSION,
        }
        if self.kind == "full":
            del document["kind"], document["adapter_rank"]
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32]


def warm_up() -> None:
    """Import the training stack (about 7 s, peft included) so that the first task does not
    wait for it."""
    prepare_offline()
    import datasets  # noqa: F401
    import sentence_transformers  # noqa: F401

    prepare_adapters()


def fine_tune(
    model: SentenceTransformer,
    pairs: Sequence[Pair],
    config: TrainConfig,
    *,
    device: str,
    on_progress: ProgressFn,
    should_stop: StopFn,
) -> int:
    """Train model in place on pairs; return the number of optimiser steps taken.

    Raises TrainingStopped when should_stop turned true during the run.
    """
    prepare_offline()
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    set_seed(config.seed)
    dataset = Dataset.from_dict(
        {"anchor": [p.query for p in pairs], "positive": [p.passage for p in pairs]}
    )
    cuda = device == "cuda"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    with tempfile.TemporaryDirectory(prefix="contextmesh-train-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            num_train_epochs=config.epochs,
            per_device_train_batch_size=max(2, min(config.batch_size, len(pairs))),
            learning_rate=config.learning_rate,
            warmup_steps=WARMUP_FRACTION,  # a float is a fraction of the run (transformers 5)
            seed=config.seed,
            data_seed=config.seed,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=not cuda,
            bf16=bf16,
            fp16=cuda and not bf16,
            dataloader_num_workers=0,
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            loss=MultipleNegativesRankingLoss(model),
            callbacks=[_progress_callback(on_progress, should_stop)],
        )
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict to stdout
        result = trainer.train()
    if should_stop():
        raise TrainingStopped("training was stopped before it finished")
    return int(result.global_step)


def _progress_callback(on_progress: ProgressFn, should_stop: StopFn) -> Any:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            on_progress(0, int(state.max_steps))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            on_progress(int(state.global_step), int(state.max_steps))
            if should_stop():
                control.should_training_stop = True

    return Progress()
