#!/usr/bin/env bash
# The GPU check of docs/scaling.md, on a machine with at least one CUDA GPU:
#   1. the GPU tests (tests/test_distributed.py, tests named test_gpu_*: bf16 pre-training follows fp32 on CPU;
#      two nccl processes train, when there are 2 GPUs);
#   2. the `gpu` preset's whole pipeline on one GPU, timed (its budget: 10 minutes);
#   3. with 2 or more GPUs, the gpu preset's pre-training on all of them with torchrun;
#   4. throughput: pre-training tokens/s and MFU (model FLOPs utilisation), wall seconds per stage.
#
# Usage:  bash benchmarks/gpu_check.sh [run folder]       (default runs/gpu-check-<date>; must not exist yet)
#         PEAK_TFLOPS=312 bash benchmarks/gpu_check.sh     (your GPU's dense bf16 peak, if it is not in the table)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}
if [ -e "$OUT" ]; then echo "$OUT exists: give a new run folder"; exit 2; fi

NGPU=$(python -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$NGPU" -lt 1 ]; then echo "no CUDA GPU visible (torch.cuda.is_available() is False): nothing to check"; exit 1; fi
python -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0), '| GPUs:', torch.cuda.device_count(), '| bf16 autocast:', torch.cuda.get_device_capability(0)[0] >= 8)"

echo "== 1. GPU tests"
python -m pytest -o addopts="" -p no:cacheprovider -q -k gpu tests/test_distributed.py

echo "== 2. the gpu preset's pipeline on one GPU -> $OUT"
start=$(date +%s)
python -m minirlhf pipeline --preset gpu --device cuda --out "$OUT"
echo "pipeline wall time: $(( $(date +%s) - start )) s (budget 600 s)"

if [ "$NGPU" -ge 2 ]; then
  echo "== 3. the gpu preset's pre-training on $NGPU GPUs (torchrun) -> $OUT-ddp-pretrained"
  start=$(date +%s)
  torchrun --standalone --nproc_per_node "$NGPU" -m minirlhf pretrain --preset gpu --no-icl --device cuda \
    --out "$OUT-ddp-pretrained"
  echo "pre-training on $NGPU GPUs: $(( $(date +%s) - start )) s"
fi

echo "== 4. throughput"
python - "$OUT" "$NGPU" <<'PY'
import json
import os
import sys
from pathlib import Path

import torch

# dense bf16 peak of one GPU, TFLOP/s (vendor sheets; no sparsity)
PEAK = {"H200": 989, "H100": 989, "A100": 312, "A10G": 70, "A10": 125, "L40S": 362, "L4": 121, "4090": 165,
        "3090": 71, "V100": 125, "T4": 65}


def mfu_line(folder: Path, label: str, gpus: int) -> None:
    meta = json.loads((folder / "metadata.json").read_text())
    cfg = json.loads((folder / "config.json").read_text())["gpt_config"]
    history, metrics = meta["history"], meta["metrics"]
    L, C = cfg["n_layer"], cfg["n_embd"]
    params = metrics["parameters"] - cfg["block_size"] * C        # position embeddings do no matmul
    context = sum(history["context"]) / len(history["context"])  # mean context of the curriculum
    flops_per_token = 6 * params + 12 * L * C * context           # forward + backward (PaLM, appendix B)
    tokens_per_s = metrics["tokens_per_s"]
    name = torch.cuda.get_device_name(0)
    peak = float(os.environ.get("PEAK_TFLOPS") or next((v for k, v in PEAK.items() if k in name), "nan"))
    mfu = flops_per_token * tokens_per_s / (peak * 1e12 * gpus)
    print(f"{label}: {tokens_per_s:,.0f} tokens/s, {flops_per_token / 1e6:.1f} MFLOP/token, "
          f"MFU {mfu:.1%} of {gpus} x {peak:.0f} TFLOP/s ({name}); val loss {metrics['val_loss']:.3f}, "
          f"{metrics['seconds']:.0f} s training + {metrics['generate_seconds']:.0f} s making the data")


out, ngpu = Path(sys.argv[1]), int(sys.argv[2])
mfu_line(out / "pretrained", "pre-training, 1 GPU", 1)
ddp = Path(f"{out}-ddp-pretrained")
if ddp.exists():
    mfu_line(ddp, f"pre-training, {ngpu} GPUs", ngpu)
metrics = json.loads((out / "metrics.json").read_text())
walls = metrics.get("wall_seconds", {})
print("wall seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in walls.items())
      + f"; total {sum(walls.values()):.0f} s")
PY
