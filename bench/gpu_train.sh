#!/usr/bin/env bash
# The training benchmark on a CUDA GPU: the same synthetic bundles and settings as the CPU
# figures in docs/benchmarks.md, with mixed precision (bf16 where supported, else fp16).
#
#   bench/gpu_train.sh [SIZES] [RUNS]        e.g. bench/gpu_train.sh 10,50,200 3
#
# Needs the project's venv with a CUDA build of torch (the pinned CPU wheel cannot see a GPU:
# install torch==2.13.0 from the CUDA index into a copy of the venv first). Prints the GPU,
# then the Markdown table of medians; per-run figures go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${1:-10,50,200}
RUNS=${2:-3}
PY=${PYTHON:-.venv/bin/python}

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device: install a CUDA build of torch")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
PY

time "$PY" bench/train_bench.py --device cuda --sizes "$SIZES" --runs "$RUNS"
