"""Per-user LoRA adapters on one shared base model: training setup, the stored folder, serving.

A full fine-tune copies all of MiniLM's weights per user (about 90 MB); a LoRA adapter adds a
low-rank update B·A beside chosen linear layers and trains only that, so a user's model is the
update alone (about a megabyte) and every user shares the base weights in memory.

The adapter folder (the model_key of an adapter model in the blob store):
    adapter.json          {"format", "base_model": base model identity, "lora": {...}}
    adapter.safetensors   the LoRA weights (peft's state dict names), float32

trainsvc writes it, searchsvc reads it; neither imports the other. peft and torch are imported
inside the functions, like meshkit.domain.embedding's.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "ADAPTER_FORMAT",
    "ADAPTER_MANIFEST",
    "ADAPTER_WEIGHTS",
    "LoraSpec",
    "adapter_base",
    "add_lora",
    "apply_adapter",
    "base_model_identity",
    "is_adapter_folder",
    "own_nbytes",
    "prepare_adapters",
    "save_adapter",
]

ADAPTER_FORMAT = "contextmesh.adapter/v1"
ADAPTER_MANIFEST = "adapter.json"
ADAPTER_WEIGHTS = "adapter.safetensors"
# Files whose bytes define a model folder's identity; weights count by name and size (hashing
# 90 MB for every training would cost more than it protects).
_IDENTITY_FILES = ("modules.json", "config.json", "sentence_bert_config.json", "tokenizer.json")


@dataclass(frozen=True)
class LoraSpec:
    """Where the low-rank updates go and how large they are."""

    rank: int = 8
    alpha: int = 16
    """The update is scaled by alpha / rank."""
    targets: tuple[str, ...] = ("query", "key", "value", "dense", "word_embeddings")
    """Layers by name suffix: in BERT, attention's q/k/v, every dense projection, and the
    token embeddings (a bundle's own words; without them, held-out MRR@10 on the demo bundle
    was 0.848 rather than 0.863, docs/benchmarks.md)."""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LoraSpec:
        return cls(int(doc["rank"]), int(doc["alpha"]), tuple(str(t) for t in doc["targets"]))


def base_model_identity(path: str | Path) -> str:
    """A short fingerprint of a model folder (its configs, and its weight files' sizes)."""
    folder = Path(path)
    digest = hashlib.sha256()
    for name in _IDENTITY_FILES:
        file = folder / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes() + b"\0")
    for file in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{file.name}:{file.stat().st_size}\0".encode())
    return digest.hexdigest()[:32]


def prepare_adapters() -> None:
    """Import peft (about 2.5 s) ahead of the first adapter a process loads."""
    import peft  # noqa: F401


def _lora_config(spec: LoraSpec) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, target_modules=list(spec.targets), lora_dropout=0.0
    )


def _transformer(model: SentenceTransformer) -> Any:
    return model[0].auto_model


def add_lora(model: SentenceTransformer, spec: LoraSpec, *, seed: int) -> None:
    """Give model fresh LoRA layers (B starts at zero: the model still equals its base) and
    freeze everything else, so training moves only the adapter. A's random start comes from
    seed, not from whatever the process drew before: same seed, same adapter."""
    import torch
    from peft import inject_adapter_in_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(_lora_config(spec), _transformer(model))
    for name, parameter in model.named_parameters():
        parameter.requires_grad = "lora_" in name


def save_adapter(
    model: SentenceTransformer, folder: Path, spec: LoraSpec, base_identity: str
) -> None:
    """Write model's LoRA weights and what they apply to into folder (created)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = get_peft_model_state_dict(_transformer(model))
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in weights.items()}, folder / ADAPTER_WEIGHTS
    )
    manifest = {"format": ADAPTER_FORMAT, "base_model": base_identity, "lora": spec.as_dict()}
    (folder / ADAPTER_MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=1) + "\n")


def is_adapter_folder(folder: Path) -> bool:
    return (folder / ADAPTER_MANIFEST).is_file()


def adapter_base(folder: Path) -> str:
    """The identity of the base model the adapter in folder was trained on."""
    manifest = json.loads((folder / ADAPTER_MANIFEST).read_text())
    if manifest.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{folder / ADAPTER_MANIFEST} is not a {ADAPTER_FORMAT} document")
    return str(manifest["base_model"])


def apply_adapter(base: SentenceTransformer, folder: Path) -> SentenceTransformer:
    """A model that is base plus the adapter in folder, sharing base's weight tensors and
    tokenizer: it costs the adapter's bytes and a few module objects, and base is unchanged.

    The view is a deep copy whose memo maps every base tensor to itself, so the module tree
    is new (LoRA layers go into the copy) while the weights stay base's.
    """
    from peft import inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    manifest = json.loads((folder / ADAPTER_MANIFEST).read_text())
    spec = LoraSpec.from_dict(manifest["lora"])
    memo: dict[int, Any] = {id(t): t for t in [*base.parameters(), *base.buffers()]}
    memo[id(base.tokenizer)] = base.tokenizer
    view = copy.deepcopy(base, memo)
    transformer = _transformer(view)
    inject_adapter_in_model(_lora_config(spec), transformer)
    weights = load_file(folder / ADAPTER_WEIGHTS, device=str(base.device))
    result: Any = set_peft_model_state_dict(transformer, weights)
    if result.unexpected_keys:
        raise ValueError(f"{folder}: adapter weights fit no layer: {result.unexpected_keys[:3]}")
    loaded = {key for key in weights}
    missing = [
        n for n, _ in transformer.named_parameters() if "lora_" in n and not _matches(n, loaded)
    ]
    if missing:
        raise ValueError(f"{folder}: no weights for adapter layers {missing[:3]}")
    view.eval()
    return view


def _matches(parameter: str, loaded: set[str]) -> bool:
    # peft stores "…query.lora_A.weight" for the parameter "…query.lora_A.default.weight".
    return parameter.replace(".default", "") in loaded


def own_nbytes(model: Any, base: Any) -> int:
    """Bytes of model's parameters and buffers that it does not share with base."""
    shared = {t.data_ptr() for t in [*base.parameters(), *base.buffers()]}
    return sum(
        t.numel() * t.element_size()
        for t in [*model.parameters(), *model.buffers()]
        if t.data_ptr() not in shared
    )
