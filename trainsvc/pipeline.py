"""One training run on one bundle, start to finish, synchronous (run it off the event loop).

    pairs and held-out queries -> base model -> evaluate base -> fine-tune -> evaluate tuned
    -> when tuned beats base: save the model folder, keep the passage embeddings

With config.kind 'adapter' the fine-tune trains only LoRA layers added to the base model, and
the saved folder holds those alone (meshkit.domain.adapter); 'full' saves the whole model.

The tuned model's passage embeddings come from its own evaluation, so publishing costs no
second pass over the passages.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meshkit.domain.adapter import add_lora, base_model_identity, save_adapter
from meshkit.domain.documents import Bundle
from meshkit.domain.embedding import encode, load_model, resolve_device
from meshkit.domain.passages import Passage
from trainsvc.evaluate import Metrics, beats, evaluate
from trainsvc.finetune import ProgressFn, StopFn, TrainConfig, TrainingStopped, fine_tune
from trainsvc.pairs import build_pairs

__all__ = ["MIN_TRAIN_PAIRS", "NotEnoughData", "TrainResult", "train_on_bundle"]

log = logging.getLogger(__name__)

MIN_TRAIN_PAIRS = 8
"""Fewer pairs than this cannot move a model usefully; training is skipped."""


class NotEnoughData(Exception):
    """The bundle holds too little to train or evaluate on; the message says what."""


@dataclass(frozen=True)
class TrainResult:
    improved: bool
    """The tuned model beat the base model on the held-out queries."""
    base: Metrics
    tuned: Metrics
    steps: int
    pairs: int
    passages: tuple[Passage, ...]
    model_dir: Path | None
    """The saved tuned model, when improved."""
    embeddings: np.ndarray | None
    """The tuned model's passage embeddings (float32, row i = passages[i]), when improved."""
    seconds: float
    device: str
    kind: str = "full"
    """'full' (model_dir is a whole model) or 'adapter' (model_dir is a LoRA adapter)."""
    base_model: str = ""
    """Identity of the base model (meshkit.domain.adapter.base_model_identity)."""


def train_on_bundle(
    bundle: Bundle,
    config: TrainConfig,
    *,
    base_model: str,
    device_setting: str,
    workdir: Path,
    on_progress: ProgressFn,
    should_stop: StopFn,
) -> TrainResult:
    """Train on a bundle; raise NotEnoughData or TrainingStopped."""
    started = time.monotonic()
    pairs = build_pairs(bundle, seed=config.seed, max_pairs=config.max_pairs)
    if pairs.repositories < 2 or len(pairs.train) < MIN_TRAIN_PAIRS or not pairs.held_out:
        raise NotEnoughData(
            f"too little to train on: {pairs.repositories} repositories with text, "
            f"{len(pairs.train)} training pairs, {len(pairs.held_out)} held-out queries "
            f"(at least 2 repositories and {MIN_TRAIN_PAIRS} pairs are needed)"
        )
    device = resolve_device(device_setting)
    model = load_model(base_model, device)

    def embed(texts: list[str]) -> np.ndarray:
        return encode(model, texts)

    base, _ = evaluate(embed, pairs.passages, pairs.held_out)
    log.info("base model: %s", base.summary())
    if should_stop():
        raise TrainingStopped("training was stopped before it started")
    adapter = config.kind == "adapter"
    if adapter:
        add_lora(model, config.lora, seed=config.seed)
    steps = fine_tune(
        model,
        pairs.train,
        config,
        device=device,
        on_progress=on_progress,
        should_stop=should_stop,
    )
    tuned, vectors = evaluate(embed, pairs.passages, pairs.held_out)
    log.info("tuned model after %d steps: %s", steps, tuned.summary())
    improved = beats(tuned, base)
    model_dir = None
    identity = base_model_identity(base_model)
    if improved:
        model_dir = workdir / "model"
        if adapter:
            save_adapter(model, model_dir, config.lora, identity)
        else:
            model.save(str(model_dir))
    return TrainResult(
        improved=improved,
        base=base,
        tuned=tuned,
        steps=steps,
        pairs=len(pairs.train),
        passages=pairs.passages,
        model_dir=model_dir,
        embeddings=vectors if improved else None,
        seconds=time.monotonic() - started,
        device=device,
        kind=config.kind,
        base_model=identity,
    )
